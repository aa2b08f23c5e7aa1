import os
import subprocess
import sys
import textwrap


def test_building_and_iterating_never_imports_tensorflow(tmp_path):
    # A fresh interpreter, so nothing imported by other tests can hide an import.
    script = textwrap.dedent(
        f"""
        import sys
        import jaxseg.data as data
        config = data.ShapesConfig(name="notf", image_size=32, num_train=8,
                                   num_validation=3, num_test=0)
        common = dict(data_dir={str(tmp_path)!r}, config=config, seed=0)
        sem = data.make_semantic_loader("jaxseg_shapes", "train", batch_size=2,
                                        image_size=32, train=True, **common)
        next(iter(sem))
        ins = data.make_instance_loader("jaxseg_shapes", "validation", batch_size=2,
                                        image_size=32, max_instances=4, train=False, **common)
        assert len(list(ins)) == 2
        data.dataset_info("jaxseg_shapes")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras"))
        print("LOADED", loaded)
        assert not loaded, loaded
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout
