"""The /infer params the viewers shipped with monailabel 0.8.5 send, read from their source.

OHIF v3 extension `services/MonaiLabelClient.js` (`infer`); 3D Slicer module `MONAILabel.py` (`MONAILabelLogic.infer`
plus every key of the model's /info/ `config`, a list sent as its selected, first entry).
"""

OHIF_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False,
               "restore_label_idx": False}
SLICER_PARAMS = {"label_type": "class", "score_threshold": 0.5, "mask_threshold": 0.5, "window": "",
                 "result_format": "auto", "result_extension": ".nrrd", "result_dtype": "uint8"}
