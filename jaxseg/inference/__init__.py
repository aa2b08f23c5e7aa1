"""The program behind eval.py: a trained (or converted) checkpoint evaluated on a dataset,
or run on image files.

    from jaxseg.inference import evaluate, predict_images
    metrics = evaluate(config, workdir)                 # eval.py
    paths = predict_images(config, workdir, "photos/")  # eval.py --images photos/
"""

from jaxseg.inference.run import evaluate, predict_images

__all__ = ["evaluate", "predict_images"]
