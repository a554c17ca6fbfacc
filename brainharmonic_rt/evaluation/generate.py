"""Command implementations: ``brainharmonic generate`` and ``brainharmonic eval music``.

The CLI only wires these: ``add_generate_args`` / ``generate`` and ``add_eval_music_args`` /
``eval_music`` (each returns an exit code; errors are BrainharmonicError subclasses).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..brain.latent_map import DEFAULT_MAP, LatentMap, SessionCentre
from ..config import InstrumentSettings
from ..errors import ConfigError, DataError
from ..events import Note
from ..music.constants import DRUM_CHANNEL
from ..music.generator import DEFAULT_MODEL, GeneratorModel, Voice
from ..music.tokens import BEATS_PER_BAR, DRUM_PROGRAM
from .music_metrics import evaluate, evaluate_file, from_notes, read_midi, summarize
from .voice_leading import EMPTY, voice_leading

MAX_NOTE_BEATS = 8.0


def bar_latents_from_file(path: Path, bars: int, latent_dim: int, latent_map: Path | None) -> np.ndarray:
    """Per-bar music latents (bars, latent_dim) from an .npz.

    ``latents`` (n, latent_dim) are music latents used as they are; ``global_latent`` (n, d) is the
    output of ``brainharmonic embed`` and goes through the latent map; its calibration windows are
    left out (as live music leaves them out), after centring the session on them when the map is
    centred. n rows are resampled to
    ``bars`` rows (evenly spaced, NaN rows skipped).
    """
    if not path.is_file():
        raise DataError(
            f"Latent file {path} does not exist; pass an .npz from `brainharmonic embed` or one with 'latents'."
        )
    try:
        data = np.load(path)
        if "latents" in data:
            lat = np.asarray(data["latents"], np.float32)
        elif "global_latent" in data:
            brain = np.asarray(data["global_latent"], np.float64)
            lmap = LatentMap.load(latent_map or DEFAULT_MAP)
            calibrating = np.asarray(data["calibrating"], bool) if "calibrating" in data else np.zeros(len(brain), bool)
            # Held rows (global_ok False: no good channel in that window) count as missing, like NaN rows.
            good = np.asarray(data["global_ok"] if "global_ok" in data else np.isfinite(brain).all(axis=1), bool)
            brain = np.where(good[:, None], brain, np.nan)
            if lmap.centred:
                brain = SessionCentre.apply_to(brain, calibrating)
            brain = brain[good & ~calibrating]
            if brain.shape[0] == 0:
                raise DataError(
                    f"{path} holds no finite latent outside calibration; embed a longer recording "
                    "(more than the signal.baseline seconds)."
                )
            lat = lmap(brain)
        else:
            raise DataError(f"{path} has neither 'latents' nor 'global_latent'; pass a latent .npz.")
    except (OSError, ValueError) as exc:
        raise DataError(f"Could not read {path} as .npz ({exc}); pass a latent .npz.") from None
    if lat.ndim != 2 or lat.shape[1] != latent_dim or lat.shape[0] == 0:
        raise DataError(
            f"{path}: latents have shape {lat.shape}, expected (n, {latent_dim}); use latents of this generator."
        )
    idx = np.linspace(0, lat.shape[0] - 1, bars).round().astype(int)
    return lat[idx]


#: groove nudge (nats) of ``generate``: chosen on sampling seeds 1000-1029, which the benchmark does not
#: report (models/generator.md); live learned mode uses the milder ``generator.groove`` setting
GENERATE_GROOVE = 3.0


def generate_notes(
    model: GeneratorModel,
    latents: np.ndarray | None,
    programs: Sequence[int],
    *,
    bars: int,
    tempo: float = 120.0,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 0.95,
    groove: float = GENERATE_GROOVE,
) -> list[Note]:
    """Decode ``bars`` bars per program (one voice each). latents: (bars, latent_dim) or None."""
    spb = 60.0 / tempo
    total = bars * BEATS_PER_BAR
    notes: list[Note] = []
    for i, prog in enumerate(programs):
        v = Voice(model, prog, (seed & 0xFFFF_FFFF, i), temperature, top_p, groove=groove)
        channel = DRUM_CHANNEL if prog == DRUM_PROGRAM else [c for c in range(16) if c != DRUM_CHANNEL][i % 15]
        for _ in range(total * 64):
            bar = max(v.decoder.bar, 0)
            if bar >= bars:
                break
            v.step(None if latents is None else latents[bar])
            if v.decoder.notes:
                tn = v.decoder.notes.pop()
                if tn.onset < total:
                    dur = min(tn.duration, MAX_NOTE_BEATS, total - tn.onset)
                    notes.append(
                        Note(tn.onset * spb, max(dur, 1e-3) * spb, tn.pitch, tn.velocity, channel, f"voice{i}")
                    )
    notes.sort(key=lambda n: (n.time, n.channel, n.pitch))
    return notes


def instruments_for(programs: Sequence[int]) -> dict[str, InstrumentSettings]:
    out = {}
    for i, prog in enumerate(programs):
        drum = prog == DRUM_PROGRAM
        ch = DRUM_CHANNEL if drum else [c for c in range(16) if c != DRUM_CHANNEL][i % 15]
        out[f"voice{i}"] = InstrumentSettings(
            program=0 if drum else prog, channel=ch, low=0, high=127, role="percussion" if drum else "melody"
        )
    return out


def add_generate_args(p: argparse.ArgumentParser) -> None:
    """Options of ``brainharmonic generate``."""
    p.add_argument("--bars", type=int, default=16, help="bars to generate (4/4)")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--latent-seed", type=int, default=None, help="draw one latent per bar from N(0, I) with this seed"
    )
    src.add_argument("--from-latents", type=Path, default=None, help=".npz with 'latents' or 'global_latent' (embed)")
    src.add_argument("--unconditioned", action="store_true", help="no latent (conditioning dropout mode)")
    p.add_argument("--out", type=Path, required=True, help="MIDI file to write")
    p.add_argument("--programs", default="0", help="comma-separated GM programs, one voice each (128 = drums)")
    p.add_argument("--tempo", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed => same notes)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument(
        "--groove",
        type=float,
        default=GENERATE_GROOVE,
        help=f"nudge (nats) towards the previous bar's onset positions; 0 = off (default {GENERATE_GROOVE})",
    )
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--latent-map", type=Path, default=None, help="brain → music map for --from-latents embed files")


def generate(args: argparse.Namespace) -> int:
    """``brainharmonic generate``: write ``--bars`` bars to ``--out``."""
    from ..sinks.midifile import notes_to_midi

    if not 1 <= args.bars <= 10_000:
        raise ConfigError(f"--bars must be 1..10000, got {args.bars}.")
    if not 20 <= args.tempo <= 300:
        raise ConfigError(f"--tempo must be 20..300 BPM, got {args.tempo}.")
    try:
        programs = [int(x) for x in str(args.programs).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--programs must be comma-separated integers 0..128, got {args.programs!r}.") from None
    if not programs or any(not 0 <= p <= 128 for p in programs):
        raise ConfigError(f"--programs must be comma-separated integers 0..128, got {args.programs!r}.")
    model = GeneratorModel(args.model)
    latents: np.ndarray | None
    if args.from_latents is not None:
        latents = bar_latents_from_file(args.from_latents, args.bars, model.latent_dim, args.latent_map)
    elif args.unconditioned:
        latents = None
    else:
        seed = args.latent_seed if args.latent_seed is not None else args.seed
        latents = (
            np.random.default_rng(seed & 0xFFFF_FFFF).standard_normal((args.bars, model.latent_dim)).astype(np.float32)
        )
    notes = generate_notes(
        model,
        latents,
        programs,
        bars=args.bars,
        tempo=args.tempo,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        groove=args.groove,
    )
    path = notes_to_midi(notes, instruments_for(programs), args.tempo, args.out)
    m = evaluate(from_notes(notes, args.tempo))
    print(
        f"wrote {path}: {len(notes)} notes, {args.bars} bars; pitch-class entropy {m.pitch_class_entropy:.2f} bits, "
        f"scale consistency {m.scale_consistency:.2f}, empty beats {m.empty_beat_rate:.2f}"
    )
    return 0


def add_eval_music_args(p: argparse.ArgumentParser) -> None:
    """Options of ``brainharmonic eval music``."""
    p.add_argument("files", nargs="+", type=Path, help="MIDI files (generated or real)")
    p.add_argument("--json", type=Path, default=None, help="also write per-file metrics and the summary here")


def eval_music(args: argparse.Namespace) -> int:
    """``brainharmonic eval music FILES...``: metrics per file and their summary."""
    rows = []
    keys = (
        "pitch_class_entropy",
        "scale_consistency",
        "groove_consistency",
        "empty_beat_rate",
        "max_duration",
        "dissonant_share",
    )
    print(
        f"{'file':40s} {'notes':>6s} {'pc_ent':>7s} {'scale':>7s} {'groove':>7s} {'empty':>7s} {'maxdur':>7s} "
        f"{'dissn':>7s} {'poly':>5s} {'instr':>5s}"
    )
    per_file: dict[str, dict[str, Any]] = {}
    for f in args.files:
        m = evaluate_file(f)
        rows.append(m)
        d = m.as_dict()
        per_file[str(f)] = d
        print(
            f"{str(f)[-40:]:40s} {m.n_notes:6d} "
            + " ".join(f"{d[k]:7.3f}" for k in keys)
            + f" {m.max_polyphony:5d} {m.instruments_active:5d}"
        )
    summary = summarize(rows)
    for k in (*keys, "max_polyphony", "instruments_active", "mean_duration", "long_note_rate"):
        if k in summary:
            s = summary[k]
            print(f"{k:22s} mean {s['mean']:.3f}  p10 {s['p10']:.3f}  p50 {s['p50']:.3f}  p90 {s['p90']:.3f}")
    vl = EMPTY
    for f in args.files:
        one = voice_leading(read_midi(f))
        per_file[str(f)]["voice_leading"] = one.as_dict()
        vl = vl + one
    print(
        f"voice leading (tracks' top lines, all files): {vl.parallel_per_100:.2f} parallel fifths/octaves per 100 "
        f"two-voice motions ({vl.motions}), crossing {100 * vl.crossing_share:.2f} % of onsets, "
        f"leaps over an octave {100 * vl.leap_share:.2f} % of moves"
    )
    if args.json is not None:
        out = {"files": per_file, "summary": summary, "voice_leading": vl.as_dict()}
        args.json.write_text(json.dumps(out, indent=1))
    return 0
