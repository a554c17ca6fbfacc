"""`train`, `export`, `eval`, `generate`: the models (training needs the [train] extra: torch)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import LazyOptions, add_config, add_lazy


def add_commands(sub: Any, lazy: LazyOptions) -> None:
    p = sub.add_parser("train", help="Train a model (needs the [train] extra: torch).")
    train = p.add_subparsers(dest="what", metavar="MODEL", required=True)
    q = train.add_parser("encoder", help="Self-supervised EEG encoder → ONNX + model card.")
    add_lazy(q, "brainharmonic_rt.training.cli_train", "add_train_arguments", lazy)
    add_config(q)
    q.set_defaults(func=cmd_train_encoder)
    q = train.add_parser("fmri-encoder", help="Self-supervised fMRI encoder (HCP region series) → ONNX + card.")
    add_lazy(q, "brainharmonic_rt.training.fmri_train", "add_train_fmri_arguments", lazy)
    q.set_defaults(func=cmd_train_fmri_encoder)

    q = train.add_parser(
        "generator",
        help="Conditioned note generator (bar VAE + decoder) on a MIDI corpus → ONNX "
        "(`brainharmonic train generator --help` lists its options).",
        add_help=False,
    )
    q.set_defaults(func=cmd_train_generator, rest=[])
    q = train.add_parser(
        "ensemble-corpus", help="Convert music21's corpus + a MIDI folder into the ensemble model's corpus (once)."
    )
    add_lazy(q, "brainharmonic_rt.training.ensemble_corpus", "add_corpus_args", lazy)
    q.set_defaults(func=cmd_train_ensemble_corpus)
    q = train.add_parser(
        "ensemble", help="Ensemble model (voices that hear each other) on the ensemble corpus → ONNX + curves."
    )
    add_lazy(q, "brainharmonic_rt.training.ensemble_args", "add_train_ensemble_args", lazy)
    q.set_defaults(func=cmd_train_ensemble)
    q = train.add_parser(
        "latent-map", help="Fit the brain → music latent map (session-centred, variance-rank alignment)."
    )
    add_lazy(q, "brainharmonic_rt.training.latent_map_fit", "add_fit_latent_map_args", lazy)
    q.set_defaults(func=cmd_fit_latent_map)

    p = sub.add_parser("generate", help="Generate music from the learned generator to a MIDI file.")
    add_lazy(p, "brainharmonic_rt.evaluation.generate", "add_generate_args", lazy)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="Export a trained checkpoint to ONNX (needs the [train] extra).")
    export = p.add_subparsers(dest="what", metavar="MODEL", required=True)
    q = export.add_parser("encoder", help="Encoder checkpoint (.pt) → ONNX with metadata and a parity check.")
    add_lazy(q, "brainharmonic_rt.training.cli_train", "add_export_arguments", lazy)
    q.set_defaults(func=cmd_export_encoder)

    p = sub.add_parser("eval", help="Print a model's metrics.")
    ev = p.add_subparsers(dest="what", metavar="MODEL", required=True)
    q = ev.add_parser(
        "encoder", help="Leave-subjects-out metrics of the encoder on eegmat (probe, codebook, distances)."
    )
    add_lazy(q, "brainharmonic_rt.evaluation.encoder", "add_eval_arguments", lazy)
    add_config(q)
    q.set_defaults(func=cmd_eval_encoder)
    q = ev.add_parser(
        "fmri-encoder", help="Rest vs task and run identity of held-out subjects from the fMRI latents vs a baseline."
    )
    add_lazy(q, "brainharmonic_rt.evaluation.fmri_eval", "add_eval_fmri_arguments", lazy)
    q.set_defaults(func=cmd_eval_fmri_encoder)
    q = ev.add_parser("music", help="Music metrics (pitch-class entropy, scale/groove consistency, ...) of MIDI files.")
    add_lazy(q, "brainharmonic_rt.evaluation.generate", "add_eval_music_args", lazy)
    q.set_defaults(func=cmd_eval_music)


def cmd_train_encoder(args: argparse.Namespace) -> int:
    from ..training.cli_train import train_encoder

    return train_encoder(args)


def cmd_train_fmri_encoder(args: argparse.Namespace) -> int:
    from ..training.fmri_train import train_fmri_encoder

    return train_fmri_encoder(args)


def cmd_eval_fmri_encoder(args: argparse.Namespace) -> int:
    from ..evaluation.fmri_eval import eval_fmri_encoder

    return eval_fmri_encoder(args)


def cmd_export_encoder(args: argparse.Namespace) -> int:
    from ..training.cli_train import export_encoder

    return export_encoder(args)


def cmd_eval_encoder(args: argparse.Namespace) -> int:
    from ..evaluation.encoder import eval_encoder

    return eval_encoder(args)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..evaluation.generate import generate

    return generate(args)


def cmd_eval_music(args: argparse.Namespace) -> int:
    from ..evaluation.generate import eval_music

    return eval_music(args)


def cmd_train_generator(args: argparse.Namespace) -> int:
    # Its options live in a module that imports torch, so they are parsed only when this command runs.
    from ..training.generator_train import add_train_generator_args, train_generator

    parser = argparse.ArgumentParser(prog="brainharmonic train generator")
    add_train_generator_args(parser)
    return train_generator(parser.parse_args(args.rest))


def cmd_train_ensemble_corpus(args: argparse.Namespace) -> int:
    from ..training.ensemble_corpus import build_corpus_command

    return build_corpus_command(args)


def cmd_train_ensemble(args: argparse.Namespace) -> int:
    from ..training.ensemble_train import train_ensemble

    return train_ensemble(args)


def cmd_fit_latent_map(args: argparse.Namespace) -> int:
    from ..training.latent_map_fit import fit_latent_map

    return fit_latent_map(args)
