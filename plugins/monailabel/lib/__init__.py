"""The medmrcnn MONAI Label app's tasks: settings, model slots, infer, train, active learning, datastores."""
