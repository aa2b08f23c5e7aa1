"""Nested model settings: one group of attribute overrides per sub-module, checked and frozen.

A module whose parts take settings of their own declares them as groups, so a config
mirrors the module tree (`config.model.rpn.pre_nms_top_n_train`, like detectron2's
`MODEL.RPN.*`) instead of the parent re-declaring every part's attributes flat::

    class MaskRCNN(nn.Module):
        GROUPS: ClassVar = {'rpn': Group(RPN, derived=('nms', 'dtype')), ...}
        rpn: Mapping[str, Any] = FrozenDict()      # a dataclass field: RPN's overrides
        def __post_init__(self):
            freeze_groups(self)                    # checked and hashable however built
            super().__post_init__()
        ...
        RPN(**self.rpn, nms=self.nms, dtype=self.dtype, name='rpn')

A group holds only the overrides of the sub-module's own attributes (its defaults stay the
sub-module's), minus the `derived` ones the parent supplies. Groups nest: a sub-module
with `GROUPS` of its own takes them inside its group (`roi_heads.mask_head.channels`).
`check_settings` validates keyword settings against the class (unknown keys get a
did-you-mean; a key listed in the class's `RENAMED` gets its new dotted name) and turns
every group (dict, `ml_collections.ConfigDict`) into a hashable `flax.core.FrozenDict`, so
the module can be hashed and compared like any other. Also here: `group_defaults` (every
group at its defaults, for configs), `get_setting` (the value a part runs with), `nest`
(dotted keys to groups) and `refuse_renamed` (old keywords of the module's constructor).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Mapping
from typing import Any

from flax.core import FrozenDict

_NOT_SETTINGS = frozenset({"parent", "name"})


@dataclasses.dataclass(frozen=True)
class Group:
    """Declares that a setting holds the attribute overrides of a sub-module.

    Attributes:
      module: the sub-module's class (a dataclass such as a `flax.linen.Module`).
      derived: its attributes that the parent supplies (not settable in the group).
    """

    module: type
    derived: tuple[str, ...] = ("dtype",)


def _groups(cls: type) -> Mapping[str, Group]:
    return getattr(cls, "GROUPS", {})


def _attributes(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_SETTINGS}


def _plain(value: Any) -> Any:
    """Returns `value` with ConfigDicts and mappings as dicts and lists as tuples, recursively."""
    if hasattr(value, "to_dict") and not isinstance(value, Mapping):  # ml_collections
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(item) for item in value)
    return value


def _unknown_message(subject: str, unknown: list[str], accepted: set[str]) -> str:
    hints = [
        f"{key} -> {close[0]}?"
        for key in unknown
        if (close := difflib.get_close_matches(key, sorted(accepted), n=1))
    ]
    return (
        f"{subject} does not take {unknown}"
        + (f" (did you mean: {', '.join(hints)})" if hints else "")
        + f"; it takes {sorted(accepted)}"
    )


def check_group(owner: str, path: str, group: Group, value: Any) -> FrozenDict:
    """Returns the group `path` (e.g. 'roi_heads.mask_head') checked and frozen.

    Args:
      owner: who is asking, for the messages (e.g. "model 'mask_rcnn_resnet50_fpn'").
      path: the group's dotted name.
      group: its declaration.
      value: a mapping (dict, FrozenDict, ConfigDict) of the sub-module's attributes.

    Raises:
      ValueError: for a value that is not a mapping, an unknown key (with the closest
        accepted key and all of them) or a key the parent supplies.
    """
    value = _plain(value)
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{owner}: setting {path!r} is a group of {group.module.__name__} settings "
            f"(a mapping such as {{'{next(iter(_attributes(group.module)))}': ...}}), "
            f"got {value!r}"
        )
    attributes = set(_attributes(group.module))
    derived = sorted(set(value) & set(group.derived))
    if derived:
        raise ValueError(
            f"{owner}: group {path!r} cannot set {derived}: its parent supplies "
            f"{sorted(group.derived)} of {group.module.__name__}"
        )
    accepted = attributes - set(group.derived)
    unknown = sorted(set(value) - accepted)
    if unknown:
        raise ValueError(_unknown_message(f"{owner}: group {path!r}", unknown, accepted))
    out = dict(value)
    for key, sub in _groups(group.module).items():
        if key in out:
            out[key] = check_group(owner, f"{path}.{key}", sub, out[key])
    return FrozenDict(out)


def check_settings(
    owner: str,
    cls: type,
    settings: Mapping[str, Any],
    *,
    fixed: Mapping[str, Any] = FrozenDict(),
    fixed_by: str = "the name",
) -> dict[str, Any]:
    """Returns `settings` for `cls(**fixed, **result)`: keys checked, groups frozen.

    Args:
      owner: who is asking, for the messages (e.g. "model 'mask_rcnn_resnet50_fpn'").
      cls: the module class; its `GROUPS` class attribute names its groups and its
        `RENAMED` one maps old (flat) keys to their new dotted names.
      settings: attribute values; a group may be a dict, FrozenDict or ConfigDict.
      fixed: attributes set by the caller (e.g. by a model name), not settable here.
      fixed_by: what fixes them, for the message.

    Raises:
      ValueError: for an old key (naming its new one), an unknown key, a fixed one, or a
        bad group (see `check_group`).
    """
    renamed = getattr(cls, "RENAMED", {})
    for key in settings:
        if key in renamed:
            raise ValueError(f"{owner}: setting {key!r} is now {renamed[key]!r}")
    accepted = set(_attributes(cls)) - set(fixed)
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ValueError(
            _unknown_message(owner, unknown, accepted)
            + (f" ({sorted(fixed)} fixed by {fixed_by})" if fixed else "")
        )
    out = dict(settings)
    for key, group in _groups(cls).items():
        if key in out:
            out[key] = check_group(owner, key, group, out[key])
    return out


def freeze_groups(module: Any) -> None:
    """Checks and freezes `module`'s groups in place; call it first in `__post_init__`.

    So a module built directly (`MaskRCNN(num_classes=3, rpn={'min_size': 0.0})`) gets
    the same checks as one built from a config, and stays hashable.
    """
    for key, group in _groups(type(module)).items():
        value = check_group(type(module).__name__, key, group, getattr(module, key))
        object.__setattr__(module, key, value)  # the dataclass is frozen after __init__


def get_setting(module: Any, key: str) -> Any:
    """Returns the value a part of `module` runs with: its group's, else the part's default.

    `get_setting(model, 'roi_heads.mask_rois_per_image')` is 128 for `MaskRCNN(num_classes=K)`;
    a key without dots is the module's own attribute.

    Raises:
      ValueError: for a key that names no setting.
    """
    *groups, leaf = key.split(".")
    cls = type(module)
    values: Mapping[str, Any] = {name: getattr(module, name) for name in _attributes(cls)}
    for group in groups:
        if group not in _groups(cls):
            raise ValueError(f"{key!r}: {cls.__name__} has no group {group!r}")
        cls, values = _groups(cls)[group].module, values.get(group, {})
    if leaf in values:
        return values[leaf]
    field = _attributes(cls).get(leaf)
    if field is None or field.default is dataclasses.MISSING:
        raise ValueError(f"{key!r}: {cls.__name__} has no setting {leaf!r} with a default")
    return field.default


def group_defaults(cls: type) -> dict[str, dict[str, Any]]:
    """Returns every group of `cls` with each settable attribute at its default, nested.

    For configs: `config.model.update(group_defaults(MaskRCNN))` lists every sub-module
    setting, so each can be overridden from the command line
    (`--config.model.rpn.min_size=0.01`). A module built from these defaults is the module
    built without them.
    """

    def defaults(group: Group) -> dict[str, Any]:
        out = {}
        for name, field in _attributes(group.module).items():
            if name in group.derived:
                continue
            if name in _groups(group.module):
                out[name] = defaults(_groups(group.module)[name])
            elif field.default is not dataclasses.MISSING:
                out[name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                out[name] = field.default_factory()
        return out

    return {name: defaults(group) for name, group in _groups(cls).items()}


def nest(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Returns dotted settings nested: {'rpn.min_size': 0.0} -> {'rpn': {'min_size': 0.0}}.

    Nested mappings in `settings` merge with dotted keys into the same group.

    Raises:
      ValueError: if a key is both a value and a group ('rpn' and 'rpn.min_size').
    """
    out: dict[str, Any] = {}
    for key, value in settings.items():
        *groups, leaf = key.split(".")
        node = out
        for i, group in enumerate(groups):
            node = node.setdefault(group, {})
            if not isinstance(node, dict):
                raise ValueError(f"setting {'.'.join(groups[: i + 1])!r} is a value and a group")
        if isinstance(value, Mapping) or hasattr(value, "to_dict"):
            value = nest(_plain(value))
            if isinstance(node.get(leaf, {}), dict):
                value = {**node.get(leaf, {}), **value}
        if leaf in node and not (isinstance(value, dict) and isinstance(node[leaf], dict)):
            raise ValueError(f"setting {key!r} is given twice")
        node[leaf] = value
    return out


def refuse_renamed(cls: type) -> type:
    """Class decorator: `cls(old_key=...)` raises the `check_settings` message for `RENAMED`.

    Without it an old keyword would be the dataclass's bare TypeError ("unexpected keyword
    argument") that does not say where the setting went.
    """
    init = cls.__init__
    renamed = cls.RENAMED

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for key in kwargs:
            if key in renamed:
                raise ValueError(f"{cls.__name__}: setting {key!r} is now {renamed[key]!r}")
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls
