"""RPN: head parity with torchvision, fixed proposal counts, losses in training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.detection import Instances
from jaxseg.models.rpn import RPN, RPNHead

torch = pytest.importorskip("torch")
tv_rpn = pytest.importorskip("torchvision.models.detection.rpn")

SIZES = ((8,), (16,), (32,))


def _levels(rng, batch=2, channels=8):
    return [rng.normal(size=(batch, s, s, channels)).astype(np.float32) for s in (16, 8, 4)]


def test_head_matches_torchvision():
    rng = np.random.default_rng(0)
    feats = _levels(rng, batch=1)
    head = RPNHead(num_anchors=3)
    params = head.init(jax.random.key(0), feats)["params"]
    ours = head.apply({"params": params}, feats)
    ref = tv_rpn.RPNHead(8, 3)
    with torch.no_grad():
        for name, module in (
            ("conv", ref.conv[0][0]),
            ("cls_logits", ref.cls_logits),
            ("bbox_pred", ref.bbox_pred),
        ):
            module.weight.copy_(
                torch.tensor(np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1))
            )
            module.bias.copy_(torch.tensor(np.asarray(params[name]["bias"])))
        logits, deltas = ref([torch.from_numpy(f).permute(0, 3, 1, 2) for f in feats])
    for (o, d), lo, de in zip(ours, logits, deltas, strict=True):
        np.testing.assert_allclose(np.asarray(o), lo.permute(0, 2, 3, 1).numpy(), atol=1e-5)
        np.testing.assert_allclose(np.asarray(d), de.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_fixed_proposal_counts_and_losses():
    rng = np.random.default_rng(1)
    feats = _levels(rng)
    rpn = RPN(
        anchor_sizes=SIZES,
        pre_nms_top_n_train=60,
        post_nms_top_n_train=40,
        pre_nms_top_n_test=30,
        post_nms_top_n_test=20,
        batch_size_per_image=32,
    )
    variables = rpn.init(jax.random.key(0), feats, (64, 64), train=False)
    gt = Instances(
        boxes=jnp.array([[[4.0, 4.0, 30.0, 30.0], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]]),
        classes=jnp.array([[1, 0], [0, 0]]),
        masks=jnp.zeros((2, 2, 8, 8), jnp.uint8),
        valid=jnp.array([[True, False], [False, False]]),
    )

    @jax.jit
    def run(v, f):
        test, _ = rpn.apply(v, f, (64, 64), train=False)
        train, losses = rpn.apply(
            v, f, (64, 64), gt, train=True, rngs={"sampling": jax.random.key(1)}
        )
        return test, train, losses

    test, train, losses = run(variables, feats)
    assert test.boxes.shape == (2, 20, 4) and test.valid.shape == (2, 20)
    assert train.boxes.shape == (2, 40, 4) and train.scores.shape == (2, 40)
    assert bool(test.valid.all())  # random scores: plenty of non-overlapping boxes
    boxes = np.asarray(train.boxes)
    assert (boxes >= 0).all() and (boxes[..., 2] <= 64).all() and (boxes[..., 3] <= 64).all()
    scores = np.asarray(train.scores)
    assert (np.diff(scores, axis=1)[np.asarray(train.valid)[:, 1:]] <= 1e-6).all()
    assert set(losses) == {"rpn_objectness", "rpn_box"}
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in losses.values())


def test_wrong_number_of_anchor_levels():
    with pytest.raises(ValueError, match="anchor sizes"):
        RPN(anchor_sizes=((8,),)).init(
            jax.random.key(0), _levels(np.random.default_rng(0)), (64, 64), train=False
        )
