"""The ensemble: one instrument per channel group.

Scalp regions get instruments that suit what they drive: frontal → melody (vibraphone), central → harmony
(warm pad), temporal → bass (acoustic bass, low register), parietal → texture (harp arpeggios), occipital → a
second melody (marimba). Brain networks (fMRI) get theirs by name (:data:`NETWORK_DEFAULTS`). Groups with
other names (``group1`` .. ``groupN`` for unknown layouts) take roles in the order bass, harmony, melody,
texture, … so the first four already make a band. An ensemble of three or more without a temporal group gets
its bass from the occipital group (else the last one), so small headsets (8 channels) still have a bottom; a
4-channel Muse (frontal + temporal) plays melody over bass. Each instrument gets its own MIDI channel; channel
9 (GM percussion) only for the percussion role.

User entries in ``music.instruments`` (keyed by group name) override field-wise:
only the fields the user wrote replace the defaults (pydantic's
``model_fields_set``). Changing only the role brings that role's program and register.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ..config import InstrumentSettings, MusicSettings
from ..errors import ConfigError
from .constants import DRUM_CHANNEL

#: Default template per role (program is General MIDI, 0-based).
ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "melody": {"role": "melody", "program": 11, "low": 60, "high": 84, "velocity": (50, 105)},
    "harmony": {"role": "harmony", "program": 89, "low": 48, "high": 72, "velocity": (35, 80)},
    "bass": {"role": "bass", "program": 32, "low": 28, "high": 50, "velocity": (60, 110)},
    "texture": {"role": "texture", "program": 46, "low": 60, "high": 91, "velocity": (35, 85)},
    "percussion": {"role": "percussion", "program": 0, "low": 35, "high": 81, "velocity": (50, 110)},
}

#: Scalp-region templates, matched by substring of the group name (first match wins).
REGION_DEFAULTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("front", ROLE_DEFAULTS["melody"]),  # vibraphone
    ("cent", ROLE_DEFAULTS["harmony"]),  # warm pad
    ("temp", ROLE_DEFAULTS["bass"]),  # acoustic bass
    ("pariet", ROLE_DEFAULTS["texture"]),  # harp
    ("occip", {"role": "melody", "program": 12, "low": 55, "high": 79, "velocity": (50, 100)}),  # marimba
)

#: Brain-network templates (fMRI, see networks.py), matched by exact group name, chosen for what
#: each network does: the visual system leads with a bright line, the somatomotor (and auditory) strip
#: keeps time on percussion, the deep structures hold the bass, the default mode network (the brain at
#: rest, turned inwards) sustains the pad, the salience / cingulo-opercular network swells in strings,
#: control (frontoparietal) and language carry melodies, attention plays the harp's quick figures.
NETWORK_DEFAULTS: dict[str, dict[str, Any]] = {
    "visual": {"role": "melody", "program": 8, "low": 67, "high": 91, "velocity": (50, 100)},  # celesta
    "somatomotor": ROLE_DEFAULTS["percussion"],
    "attention": ROLE_DEFAULTS["texture"],  # harp
    "cingulo_opercular": {**ROLE_DEFAULTS["harmony"], "program": 48},  # string ensemble
    "language": {"role": "melody", "program": 71, "low": 52, "high": 79, "velocity": (45, 95)},  # clarinet
    "frontoparietal": ROLE_DEFAULTS["melody"],  # vibraphone
    "default": ROLE_DEFAULTS["harmony"],  # warm pad
    "subcortical": ROLE_DEFAULTS["bass"],  # acoustic bass
}

#: Templates for groups that are not scalp regions, in order of appearance.
FALLBACK_DEFAULTS: tuple[dict[str, Any], ...] = (
    ROLE_DEFAULTS["bass"],
    ROLE_DEFAULTS["harmony"],
    ROLE_DEFAULTS["melody"],
    ROLE_DEFAULTS["texture"],
    REGION_DEFAULTS[4][1],  # marimba
    {**ROLE_DEFAULTS["harmony"], "program": 48},  # string ensemble
    {**ROLE_DEFAULTS["texture"], "program": 8, "low": 72, "high": 96},  # celesta
    {**ROLE_DEFAULTS["melody"], "program": 4},  # electric piano
    {**ROLE_DEFAULTS["bass"], "program": 33},  # fingered bass
    {**ROLE_DEFAULTS["melody"], "program": 73, "low": 67, "high": 91},  # flute
    {**ROLE_DEFAULTS["harmony"], "program": 52},  # choir aahs
    {**ROLE_DEFAULTS["texture"], "program": 10},  # music box
    {**ROLE_DEFAULTS["melody"], "program": 71, "low": 52, "high": 79},  # clarinet
    {**ROLE_DEFAULTS["harmony"], "program": 16},  # drawbar organ
    {**ROLE_DEFAULTS["texture"], "program": 108},  # kalimba
)


def _templates(group_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Pick a default template per group: its region's if free, else the next fallback."""
    out: dict[str, dict[str, Any]] = {}
    used_regions: set[str] = set()
    fallback = 0
    for name in group_names:
        lowered = name.lower()
        if lowered in NETWORK_DEFAULTS:
            out[name] = dict(NETWORK_DEFAULTS[lowered])
            continue
        region = next((key for key, _ in REGION_DEFAULTS if key in lowered), None)
        if region is not None and region not in used_regions:
            used_regions.add(region)
            out[name] = dict(next(t for key, t in REGION_DEFAULTS if key == region))
        else:
            out[name] = dict(FALLBACK_DEFAULTS[fallback % len(FALLBACK_DEFAULTS)])
            fallback += 1
    if len(out) >= 3 and not any(t["role"] == "bass" for t in out.values()):
        # a band needs a bottom: e.g. an 8-channel cap without temporal sites (frontal, central,
        # parietal, occipital) gets its bass from the occipital group (else the last group)
        bottom = next((n for n in out if "occip" in n.lower()), list(out)[-1])
        out[bottom] = dict(ROLE_DEFAULTS["bass"])
    return out


def resolve_instruments(group_names: Sequence[str], music: MusicSettings) -> dict[str, InstrumentSettings]:
    """One :class:`InstrumentSettings` per group name, defaults merged with ``music.instruments``.

    Raises :class:`ConfigError` for an entry naming a group that does not exist, for
    channel 9 on a melodic role, for two instruments with different programs on one
    channel, and when the groups need more MIDI channels than exist.
    """
    names = list(group_names)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"Channel group names must be unique; {', '.join(dupes)} appear more than once.")
    unknown = [g for g in music.instruments if g not in names]
    if unknown:
        existing = ", ".join(names) if names else "(none)"
        raise ConfigError(
            f"music.instruments has an entry for channel group {unknown[0]!r}, which does not exist; "
            f"the groups are: {existing}. Rename or remove the entry."
        )
    templates = _templates(names)
    merged: dict[str, dict[str, Any]] = {}
    for name in names:
        fields = dict(templates[name])
        user = music.instruments.get(name)
        given: dict[str, Any] = {}
        if user is not None:
            given = {f: getattr(user, f) for f in user.model_fields_set}
            if "role" in given and given["role"] != fields["role"]:
                fields = dict(ROLE_DEFAULTS[given["role"]])
        fields.update(given)
        if "channel" not in given:
            fields.pop("channel", None)
        merged[name] = fields
    _assign_channels(merged)
    out: dict[str, InstrumentSettings] = {}
    for name, fields in merged.items():
        try:
            out[name] = InstrumentSettings(**fields)
        except ValidationError as exc:
            msg = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ConfigError(
                f"Instrument for group {name!r} is invalid: {msg}. Fix music.instruments.{name}."
            ) from None
    _check_channels(out)
    return out


def _assign_channels(merged: dict[str, dict[str, Any]]) -> None:
    """Give each instrument without a user channel the lowest free one (9 only for percussion)."""
    taken = {f["channel"] for f in merged.values() if "channel" in f}
    free = [c for c in range(16) if c != DRUM_CHANNEL and c not in taken]
    for name, fields in merged.items():
        if "channel" in fields:
            continue
        if fields["role"] == "percussion":
            fields["channel"] = DRUM_CHANNEL
            continue
        if not free:
            raise ConfigError(
                f"Channel group {name!r} gets no MIDI channel: {len(merged)} groups need more than the 15 "
                "melodic channels; merge groups (signal.groups / signal.fallback_groups) or share channels "
                "explicitly in music.instruments."
            )
        fields["channel"] = free.pop(0)


def _check_channels(instruments: dict[str, InstrumentSettings]) -> None:
    by_channel: dict[int, tuple[str, InstrumentSettings]] = {}
    for name, inst in instruments.items():
        if inst.channel == DRUM_CHANNEL and inst.role != "percussion":
            raise ConfigError(
                f"Instrument for group {name!r} is on channel 9 (General MIDI percussion) but its role is "
                f"{inst.role}; choose another channel or set role = 'percussion'."
            )
        other = by_channel.get(inst.channel)
        if other is not None and other[1].program != inst.program:
            raise ConfigError(
                f"Groups {other[0]!r} and {name!r} share MIDI channel {inst.channel} with different programs "
                f"({other[1].program} and {inst.program}); give them separate channels in music.instruments."
            )
        by_channel.setdefault(inst.channel, (name, inst))
