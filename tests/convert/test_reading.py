"""Reading weights: weights-only .pth, .safetensors without torch, refusals, no-torch message."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from jaxseg.convert import INSTALL_HINT, read_state_dict
from jaxseg.convert.reading import import_torch, to_numpy
from jaxseg.convert.safetensors_file import read_safetensors


def test_safetensors_round_trip(tmp_path, write_safetensors):
    rng = np.random.default_rng(0)
    tensors = {
        "a.weight": rng.normal(size=(3, 2, 1, 1)).astype(np.float32),
        "a.bias": rng.normal(size=3),
        "b.half": rng.normal(size=(2, 2)).astype(np.float16),
        "bn.num_batches_tracked": np.array(7, np.int64),
        "empty": np.zeros((0, 4), np.float32),
    }
    write_safetensors(tmp_path / "w.safetensors", tensors)
    got = read_state_dict(tmp_path / "w.safetensors")
    assert set(got) == set(tensors)
    for name, value in tensors.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape
        np.testing.assert_array_equal(got[name], value)


def test_safetensors_bfloat16_widens_to_float32(tmp_path, write_safetensors):
    values = torch.tensor([1.0, -2.5, 3.140625, 1e-3], dtype=torch.bfloat16)
    raw = values.view(torch.int16).numpy().view(np.uint16)
    write_safetensors(tmp_path / "b.safetensors", {"x": raw}, dtype_names={"x": "BF16"})
    got = read_safetensors(tmp_path / "b.safetensors")["x"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values.float().numpy())


def test_safetensors_agrees_with_the_reference_library(tmp_path):
    import safetensors.torch as safetensors_torch

    tensors = {"w": torch.randn(4, 3), "b": torch.arange(5), "h": torch.randn(2).half()}
    safetensors_torch.save_file(tensors, str(tmp_path / "ref.safetensors"))
    got = read_safetensors(tmp_path / "ref.safetensors")
    for name, value in tensors.items():
        np.testing.assert_array_equal(got[name], value.numpy())


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x01\x00", "2 bytes"),
        ((10**9).to_bytes(8, "little") + b"{}", "header of"),
        ((4).to_bytes(8, "little") + b"nope", "not JSON"),
        ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
    ],
)
def test_safetensors_rejects_malformed_files(tmp_path, content, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_safetensors(path)


def test_safetensors_rejects_offsets_outside_the_file(tmp_path, write_safetensors):
    write_safetensors(tmp_path / "w.safetensors", {"x": np.zeros(4, np.float32)})
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])
    with pytest.raises(ValueError, match="outside the file"):
        read_safetensors(tmp_path / "cut.safetensors")
    text = data.replace(b'"shape": [4]', b'"shape": [5]')
    (tmp_path / "shape.safetensors").write_bytes(text)
    with pytest.raises(ValueError, match=r"shape \(5,\) F32 has 16 bytes"):
        read_safetensors(tmp_path / "shape.safetensors")


def test_pth_state_dict_and_wrapped_checkpoint(tmp_path):
    state = {"conv.weight": torch.randn(2, 3, 1, 1), "conv.bias": torch.randn(2)}
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pth")
    parallel = {f"module.{k}": v for k, v in state.items()}
    torch.save(parallel, tmp_path / "parallel.pth")
    for name in ("plain.pth", "wrapped.pth", "parallel.pth"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(state), name
        np.testing.assert_array_equal(got["conv.weight"], state["conv.weight"].numpy())


class _Payload:
    """Unpickling this would create a file: what an unrestricted unpickle lets a file do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_refuses_a_pickle_that_is_not_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused: not a weights-only torch file"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()
    with open(tmp_path / "plain_pickle.pth", "wb") as f:
        pickle.dump({"weight": np.zeros(2)}, f, protocol=2)  # a NumPy array is not a torch tensor
    with pytest.raises(ValueError, match="refused"):
        read_state_dict(tmp_path / "plain_pickle.pth")


def test_refuses_what_is_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="got list"):
        to_numpy([1, 2])


def test_missing_torch_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        import_torch()
    with pytest.raises(ImportError, match="pip install"):
        read_state_dict(tmp_path / "w.pth")


def test_jaxseg_works_without_torch(tmp_path, write_safetensors):
    # A fresh interpreter where torch and torchvision cannot be imported: the library, the
    # converter on NumPy weights and on a .safetensors file, and the CLI's torch message.
    rng = np.random.default_rng(0)
    write_safetensors(tmp_path / "w.safetensors", {"conv1.weight": rng.normal(size=(2, 3))})
    (tmp_path / "w.pth").write_bytes(b"")
    code = f"""
import sys
sys.modules["torch"] = None
sys.modules["torchvision"] = None
import numpy as np
import jaxseg, jaxseg.models, jaxseg.ops
from jaxseg.convert import from_torchvision, read_state_dict
from jaxseg.convert.__main__ import main
state = read_state_dict({str(tmp_path / "w.safetensors")!r})
assert list(state) == ["conv1.weight"]
try:
    from_torchvision(state, "resnet18")
    raise AssertionError("converted a state dict that lacks most keys")
except ValueError as e:
    assert "missing keys" in str(e)
assert main(["--arch", "vgg16", "--input", {str(tmp_path / "w.pth")!r},
             "--output", {str(tmp_path / "out")!r}]) == 1
print("ok")
"""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
    assert "pip install 'jaxseg[torch]'" in result.stderr
