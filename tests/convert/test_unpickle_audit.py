"""No code path in jaxseg unpickles without restriction (weights come from untrusted files)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

UNSAFE = {
    "pickle / dill / cloudpickle / joblib load": re.compile(
        r"\b(pickle|cPickle|dill|cloudpickle|joblib)\.(load|loads)\b|\bUnpickler\("
    ),
    "numpy load with allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only=True)"),
}


def test_no_unrestricted_unpickle_in_jaxseg():
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "jaxseg")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path) as f:
                for number, line in enumerate(f, start=1):
                    for what, pattern in UNSAFE.items():
                        if pattern.search(line):
                            found.append(f"{os.path.relpath(path, ROOT)}:{number}: {what}")
    assert not found, "\n".join(found)


def test_the_audit_would_see_an_unsafe_call():
    pattern = UNSAFE["torch.load without weights_only=True"]
    assert pattern.search('torch.load(path, map_location="cpu")')
    assert not pattern.search('torch.load(path, map_location="cpu", weights_only=True)')
    assert UNSAFE["pickle / dill / cloudpickle / joblib load"].search("x = pickle.load(f)")
