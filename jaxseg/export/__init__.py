"""Exported predictors: one `jax.export` artifact (StableHLO) with pre- and post-processing.

    python -m jaxseg.export --workdir W --output DIR [--config C] [--canvas 800x1344] [--batch 4]

    import jaxseg.export
    predictor = jaxseg.export.load(DIR)     # no Flax, no model code imported
    results = predictor([image])            # as jaxseg.predict.Predictor's

Writing an export needs the model: `from jaxseg.export.writer import export_predictor`
(not imported here, so that loading stays free of Flax). See docs/deploy.md.
"""

from jaxseg.export.artifact import ExportedPredictor, load
from jaxseg.export.layout import ARTIFACT_FILE, METADATA_FILE, VARIABLES_FILE

__all__ = ["ARTIFACT_FILE", "METADATA_FILE", "VARIABLES_FILE", "ExportedPredictor", "load"]
