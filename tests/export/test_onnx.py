"""ONNX export (jaxseg.export.onnx, `python -m jaxseg.export --onnx`): FCN graphs in ONNX
Runtime equal XLA's numbers; Mask R-CNN gets an error naming the primitive jax2onnx lacks."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime
import pytest
from tiny_predictors import fcn_predictor, mask_rcnn_predictor

import jaxseg.export
from jaxseg.config import ConfigError
from jaxseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from jaxseg.export.layout import ONNX_FILE
from jaxseg.export.onnx import OnnxUnsupportedError, write_onnx
from jaxseg.export.writer import export_predictor
from jaxseg.models import build_model
from jaxseg.testing import TINY_MASK_RCNN_NAME, tiny_mask_rcnn

SIZE = 64


def _perturbed(variables, scale):
    """The variables plus noise: FCN's score layers start at zero, whose logits say nothing."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    noisy = [
        x + scale * jax.random.normal(k, x.shape, x.dtype)
        for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, noisy)


def _semantic_fn(name, noise, **settings):
    model = build_model(name, num_classes=5, **settings)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)), train=False)
    variables = _perturbed(variables, noise)
    mean, std = IMAGENET_MEAN * 255.0, IMAGENET_STD * 255.0

    def fn(images):
        outputs = model.apply(variables, (images.astype(jnp.float32) - mean) / std, train=False)
        logits = outputs["out"] if isinstance(outputs, dict) else outputs
        return {"logits": logits, "classes": jnp.argmax(logits, axis=-1).astype(jnp.int32)}

    return fn


@pytest.mark.parametrize(
    ("name", "noise", "settings"),
    [
        ("fcn8s", 0.06, {"width": 0.125}),
        ("fcn_resnet50", 0.02, {"width": 0.125, "aux_loss": True}),
    ],
)
def test_fcn_in_onnx_runtime_equals_xla(tmp_path, name, noise, settings):
    fn = _semantic_fn(name, noise, **settings)
    spec = jax.ShapeDtypeStruct((2, SIZE, SIZE, 3), jnp.uint8)
    path = str(tmp_path / "model.onnx")
    names = write_onnx(fn, [spec], path, input_names=["images"])
    assert names == ["classes", "logits"]
    assert os.listdir(tmp_path) == ["model.onnx"]  # no temporary file left

    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    got = dict(zip(names, session.run(None, {"images": images}), strict=True))
    want = jax.tree.map(np.asarray, jax.jit(fn)(images))

    scale = np.abs(want["logits"]).max()
    assert scale > 1.0, "the logits must not be trivially small for the comparison to mean much"
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=0, atol=1e-4 * scale)
    margin = np.sort(want["logits"], axis=-1)
    clear = margin[..., -1] - margin[..., -2] > 1e-3 * scale  # argmax not decided by rounding
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(got["classes"][clear], want["classes"][clear])


def test_mask_rcnn_names_the_primitive_and_the_alternative(tmp_path):
    settings = tiny_mask_rcnn()
    del settings["depth"]  # fixed by the name
    model = build_model(TINY_MASK_RCNN_NAME, **settings)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)), train=False)

    def fn(images):
        detections = model.apply(variables, images, train=False)
        return detections.boxes, detections.scores, detections.masks

    path = tmp_path / "model.onnx"
    with pytest.raises(OnnxUnsupportedError, match=r"primitive '\w+' at .*\.py:\d+.*jax\.export"):
        write_onnx(
            fn,
            [jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)],
            path,
            input_names=["images"],
        )
    assert not os.listdir(tmp_path)  # nothing half-written


def test_without_jax2onnx_the_error_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    with pytest.raises(ImportError, match=r"pip install .*jax2onnx"):
        write_onnx(
            lambda x: x,
            [jax.ShapeDtypeStruct((1,), jnp.float32)],
            tmp_path / "m.onnx",
            input_names=["x"],
        )
    assert not os.listdir(tmp_path)


def _packed_inputs():
    """Two canvas slots 64 x 96: a full image resized to 48 x 72, and a 40 x 50 one as is."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    images[1, 40:] = 0
    images[1, :, 50:] = 0
    return {
        "images": images,
        "sizes": np.array([[64, 96], [40, 50]], np.int32),
        "input_sizes": np.array([[48, 72], [40, 50]], np.int32),
        "score_threshold": np.array(0.5, np.float32),
    }


def test_export_with_onnx_writes_the_predictor_s_function(tmp_path):
    predictor = fcn_predictor(canvas=(64, 96), batch_size=2)
    folder = export_predictor(predictor, tmp_path / "export", onnx=True)
    metadata = jaxseg.export.load(folder).metadata
    assert metadata["onnx"] == ONNX_FILE
    session = onnxruntime.InferenceSession(os.path.join(folder, ONNX_FILE))
    inputs = _packed_inputs()
    assert [i.name for i in session.get_inputs()] == list(inputs)
    (got,) = session.run(["classes"], inputs)
    want = jax.jit(predictor.function)(predictor.variables, *inputs.values())["classes"]
    assert len(np.unique(want)) > 1  # a class map worth comparing
    np.testing.assert_array_equal(got, np.asarray(want))


def test_export_with_onnx_of_mask_rcnn_is_one_error_and_writes_nothing(tmp_path):
    predictor = mask_rcnn_predictor(canvas=(64, 64), batch_size=1)
    with pytest.raises(ConfigError, match=r"--onnx: jax2onnx .* primitive '\w+' .*jax\.export"):
        export_predictor(predictor, tmp_path / "export", onnx=True)
    assert not os.listdir(tmp_path)
