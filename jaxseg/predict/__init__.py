"""Prediction on images of any size, from a training workdir or a converted folder.

    from jaxseg.predict import Predictor
    predictor = Predictor.from_workdir("converted/maskrcnn", canvas=(800, 1344), batch_size=4)
    for result in predictor(images):        # uint8 [H, W, 3] each
        result["boxes"], result["masks"]    # in the image's own pixels

`prediction_function` is the jitted (and exported, `jaxseg.export`) function: resize,
normalisation, the model and post-processing for a fixed canvas and batch.
"""

from jaxseg.predict.function import input_specs, prediction_function
from jaxseg.predict.predictor import Predictor
from jaxseg.predict.restore import converted_metadata, restore_variables

__all__ = [
    "Predictor",
    "converted_metadata",
    "input_specs",
    "prediction_function",
    "restore_variables",
]
