"""The files of an export folder, shared by the writer and the loader (no imports)."""

METADATA_FILE = "jaxseg_export.json"
ARTIFACT_FILE = "predict.jaxexport"  # jax.export's serialized StableHLO of the predictor
VARIABLES_FILE = "variables.npz"  # the model's variables, the artifact's first argument
ONNX_FILE = "predict.onnx"  # with --onnx: the same function in ONNX, variables inside
FORMAT = "jaxseg.export"
FORMAT_VERSION = 1
