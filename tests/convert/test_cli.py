"""`python -m jaxseg.convert`: .pth and .safetensors in, an orbax checkpoint out, read back."""

import argparse
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
from flax import traverse_util

from jaxseg.convert import METADATA_FILE, from_torchvision, load_converted
from jaxseg.convert.__main__ import main
from jaxseg.models import FCNResNet


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory, torchvision_resnet18):
    """Returns `(net, path)`: a random torchvision ResNet-18 in eval mode and its .pth file."""
    net = torchvision_resnet18
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_pth_round_trip_gives_torchvision_outputs(resnet18_file, tmp_path, capsys):
    net, path = resnet18_file
    assert main(["--arch", "resnet18", "--input", str(path), "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "dropped fc.weight" in printed and "wrote resnet18" in printed
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert metadata["arch"] == "resnet18" and metadata["prefix"] == ""
    assert metadata["preprocessing"]["resize_size"] == 256
    assert set(metadata["dropped"]) == {"fc.weight", "fc.bias"}

    model, variables = load_converted(tmp_path)
    direct_model, direct = from_torchvision(net.state_dict(), "resnet18")
    assert model == direct_model
    jax.tree.map(np.testing.assert_array_equal, variables, direct)
    images = torch.randn(1, 3, 40, 33, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net.layer4(net.layer3(net.layer2(net.layer1(
            net.maxpool(net.relu(net.bn1(net.conv1(images))))
        )))).permute(0, 2, 3, 1).numpy()  # fmt: skip
    got = jax.jit(model.apply)(variables, jnp.asarray(images.permute(0, 2, 3, 1).numpy()))
    assert np.abs(got["c5"] - want).max() < 1e-4 * np.abs(want).max()


def test_checkpoint_reads_as_the_trainer_reads_a_workdir(resnet18_file, tmp_path):
    # The trainer's `init_from`: CheckpointManager(<dir>/checkpoints, items state + data),
    # its best (else latest) step, the `state` item restored without a target, then
    # `{'params': state['params'], **state['model_state']}`.
    _, path = resnet18_file
    assert main(["--arch", "resnet18", "--input", str(path), "--output", str(tmp_path)]) == 0
    manager = ocp.CheckpointManager(
        str(tmp_path / "checkpoints"),
        item_names=("state", "data"),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
    )
    step = manager.best_step() if manager.best_step() is not None else manager.latest_step()
    assert step == 0
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    state = state["state"]
    assert set(state) == {"step", "params", "model_state"} and int(state["step"]) == 0
    assert set(state["model_state"]) == {"batch_stats"}
    assert state["params"]["layer1_0"]["conv1"]["kernel"].shape == (3, 3, 64, 64)
    try:
        from jaxseg.train.init_from import read_variables  # once the trainer is merged
    except ImportError:
        return
    variables, _ = read_variables(str(tmp_path))
    assert set(variables) == {"params", "batch_stats"}


def test_prefix_nests_a_backbone_for_fcn_resnet(resnet18_file, tmp_path):
    _, path = resnet18_file
    args = ["--arch", "resnet18", "--input", str(path), "--output", str(tmp_path)]
    assert main([*args, "--prefix", "backbone", "--setting", "norm=frozen"]) == 0
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert metadata["settings"] == {"norm": "frozen"} and metadata["prefix"] == "backbone"
    manager = ocp.CheckpointManager(str(tmp_path / "checkpoints"), item_names=("state",))
    state = manager.restore(0, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    manager.close()
    saved = {"params": state["params"], **state["model_state"]}
    fcn = FCNResNet(num_classes=3, depth=18)
    want = jax.eval_shape(fcn.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    want = traverse_util.flatten_dict(dict(want), sep="/")
    got = traverse_util.flatten_dict(saved, sep="/")
    assert got and all(path.split("/")[1] == "backbone" for path in got)
    assert {p: tuple(v.shape) for p, v in got.items()} == {
        p: v.shape for p, v in want.items() if p.split("/")[1] == "backbone"
    }
    model, variables = load_converted(tmp_path)  # the prefix comes off again
    assert model.norm == "frozen" and "layer1_0" in variables["params"]


def test_safetensors_through_python_m(resnet18_file, tmp_path, write_safetensors):
    net, _ = resnet18_file
    tensors = {k: v.numpy() for k, v in net.state_dict().items()}
    write_safetensors(tmp_path / "resnet18.safetensors", tensors)
    command = [sys.executable, "-m", "jaxseg.convert", "--arch", "resnet18"]
    command += ["--input", str(tmp_path / "resnet18.safetensors"), "--output", str(tmp_path / "o")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    _, variables = load_converted(tmp_path / "o")
    _, direct = from_torchvision(net.state_dict(), "resnet18")
    jax.tree.map(np.testing.assert_array_equal, variables, direct)


def test_bad_inputs_exit_with_a_message(resnet18_file, tmp_path, capsys):
    _, path = resnet18_file
    out = str(tmp_path / "out")
    assert main(["--arch", "resnet50", "--input", str(path), "--output", out]) == 2
    error = capsys.readouterr().err
    assert "missing keys" in error and "layer1.0.conv3.weight" in error
    assert "looks like a torchvision 'resnet18'" in error
    assert not os.path.exists(out)

    # torchvision's training references save {'model', 'optimizer', 'args': Namespace, ...}:
    # a Namespace is an arbitrary object to the weights-only unpickler.
    torch.save(
        {"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "r.pth"
    )
    assert main(["--arch", "resnet18", "--input", str(tmp_path / "r.pth"), "--output", out]) == 2
    assert "refused: not a weights-only torch file" in capsys.readouterr().err

    assert main(["--arch", "resnet18", "--input", str(path), "--output", out]) == 0
    assert main(["--arch", "resnet18", "--input", str(path), "--output", out]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: exit status 2 and the known archs
        main(["--arch", "resnet42", "--input", str(path), "--output", out])
    assert "fcn_resnet50" in capsys.readouterr().err
