"""`brainharmonic train latent-map`: fit the brain → music latent map on embedded EEG sessions.

Needs no torch (numpy only), but it is a fitting step, so it lives with the training code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..brain.latent_map import DEFAULT_MAP, LatentMap, SessionCentre
from ..errors import DataError
from ..music.generator import DEFAULT_MODEL


def add_fit_latent_map_args(p: argparse.ArgumentParser) -> None:
    """Options of ``brainharmonic fit latent-map`` (or a ``train latent-map`` subcommand)."""
    p.add_argument("--eeg", type=Path, required=True, help="EEG folder (e.g. eegmat) to embed with the encoder")
    p.add_argument(
        "--music",
        type=Path,
        default=DEFAULT_MODEL.with_name("generator_latent.npz"),
        help="music latent summary written by `train generator`",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_MAP)
    p.add_argument("--scaling", choices=("whiten", "similarity"), default="similarity")
    p.add_argument("--holdout", type=float, default=0.33, help="fraction of subjects kept for the distance check")
    p.add_argument(
        "--no-centre",
        dest="centre",
        action="store_false",
        help="fit on raw latents instead of session-centred ones (see brain/latent_map.py)",
    )


def holdout_count(n_sessions: int, share: float) -> int:
    """How many of the last sessions ``train latent-map`` keeps out of the fit (none of a single session)."""
    return max(1, round(n_sessions * share)) if n_sessions > 1 else 0


def fit_latent_map(args: argparse.Namespace) -> int:
    """Embed every session with the encoder, fit the map on most subjects, check distances on the rest.

    Brain vectors are the global and the group latents of every non-calibrating window, each source
    centred on its session's calibration mean unless ``--no-centre``.
    """
    import asyncio

    from ..brain.latent_map import Space, distance_spearman
    from ..config import Settings
    from ..evaluation.embed import embed_source
    from ..evaluation.sessions import discover_sessions, open_session

    if not args.music.is_file():
        raise DataError(f"Music latent summary {args.music} does not exist; run `brainharmonic train generator` first.")
    m = np.load(args.music)
    music = Space(m["mean"], m["axes"], m["std"])
    sessions = discover_sessions(args.eeg)
    n_hold = holdout_count(len(sessions), args.holdout)
    fit_x: list[np.ndarray] = []
    hold_x: list[np.ndarray] = []
    settings = Settings()
    for i, s in enumerate(sessions):
        e = asyncio.run(embed_source(open_session(s).source, settings))
        # the composer feeds group latents (one per instrument), else the global one: fit on both
        sources = [e.global_latent, *e.group_latents.transpose(1, 0, 2)]
        masks = [e.global_ok, *e.group_ok.T]  # held rows (no good channel in the window) are left out
        if args.centre:
            sources = [
                SessionCentre.apply_to(np.where(m[:, None], src, np.nan), e.calibrating)
                for src, m in zip(sources, masks, strict=True)
            ]
        x = np.concatenate([src[~e.calibrating & m] for src, m in zip(sources, masks, strict=True)])
        (hold_x if i >= len(sessions) - n_hold else fit_x).append(x)
    brain = np.concatenate(fit_x)
    lmap = LatentMap.fit(brain, music, args.scaling, centred=args.centre)
    report: dict[str, float] = {
        "fit_windows": int(brain.shape[0]),
        "fit_sessions": len(fit_x),
        "holdout_sessions": len(hold_x),
        "centred": bool(args.centre),
    }
    if hold_x:
        held = np.concatenate(hold_x)
        for scaling in ("whiten", "similarity"):
            other = LatentMap(lmap.brain, music, scaling, lmap.clip, lmap.centred)
            report[f"spearman_{scaling}"] = distance_spearman(held, other(held), max_points=600)
            report[f"spearman_{scaling}_noclip"] = distance_spearman(
                held, LatentMap(lmap.brain, music, scaling, 1e9, lmap.centred)(held), max_points=600
            )
        y = lmap(held)
        report["mapped_total_var"] = float(y.var(0).sum())
        report["music_total_var"] = float((music.std**2).sum())
    lmap.save(args.out)
    print(json.dumps(report, indent=1))
    return 0
