"""`eval encoder` and its parts: sessions from real eegmat files, the probe, perplexity, the model card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import Settings
from brainharmonic_rt.errors import DataError
from brainharmonic_rt.evaluation.encoder import add_eval_arguments, eval_encoder, evaluate, format_report
from brainharmonic_rt.evaluation.modelcard import read_section, write_section
from brainharmonic_rt.evaluation.probe import (
    balanced_accuracy,
    fit_probe,
    leave_subjects_out,
    perplexity,
    subject_folds,
)
from brainharmonic_rt.evaluation.sessions import discover_sessions, open_session


def test_eegmat_sessions_are_rest_then_task(eegmat_dir: Path) -> None:
    sessions = discover_sessions(eegmat_dir)
    assert len(sessions) >= 24 and sessions[0].subject == "Subject00"
    assert all(s.labels == ("rest", "task") for s in sessions)
    assert sessions[0].paths[0].name == "Subject00_1.edf" and sessions[0].paths[1].name == "Subject00_2.edf"
    sess = open_session(sessions[0], seconds=10)
    assert list(sess.starts) == [0.0, 10.0] and list(sess.ends) == [10.0, 20.0]
    assert sess.segment_of(9.998, 2.0) == 0
    assert sess.segment_of(11.0, 2.0) == -1  # straddles rest and task
    assert sess.segment_of(12.0 - 1 / 500, 2.0) == 1


def test_session_discovery_errors(tmp_path: Path, eegmat_dir: Path) -> None:
    with pytest.raises(DataError, match="does not exist; pass --data"):
        discover_sessions(tmp_path / "nope")
    with pytest.raises(DataError, match=r"No recordings \(.edf"):
        discover_sessions(tmp_path)
    with pytest.raises(DataError, match=r"Subject\(s\) Subject77 not found"):
        discover_sessions(eegmat_dir, ["Subject77"])


def test_probe_learns_a_linear_rule_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5))
    y = (x[:, 0] - 0.5 * x[:, 2] > 0.3).astype(int)
    subject = np.repeat([f"s{i}" for i in range(6)], 100)
    folds = subject_folds(list(subject), 3)
    assert leave_subjects_out(x, y, subject, folds).pooled > 0.95
    noise = leave_subjects_out(x, rng.integers(0, 2, 600), subject, folds)
    assert 0.4 < noise.pooled < 0.6
    # Class imbalance does not fool balanced accuracy: always predicting the majority scores 0.5.
    assert balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])) == 0.5
    probe = fit_probe(x, y)
    assert balanced_accuracy(y, probe.predict(x)) > 0.95


def test_perplexity_and_folds() -> None:
    assert perplexity(np.arange(64), 64) == pytest.approx(64.0)
    assert perplexity(np.zeros(100, dtype=int), 64) == pytest.approx(1.0)
    assert subject_folds(["c", "a", "b", "d"], 2) == [["a", "c"], ["b", "d"]]
    with pytest.raises(ValueError, match="n_folds"):
        subject_folds(["a", "b"], 3)


def test_model_card_sections_are_rewritten_in_place(tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text("# Card\n\nhand-written notes\n")
    write_section(card, "metrics", "first")
    write_section(card, "training", "trained")
    write_section(card, "metrics", "second")
    text = card.read_text()
    assert "hand-written notes" in text and "first" not in text and text.count("metrics:start") == 1
    assert read_section(card, "metrics") == "second" and read_section(card, "training") == "trained"
    assert read_section(card, "nothing") is None


def test_eval_encoder_on_three_subjects(eegmat_dir: Path, tmp_path: Path, capsys) -> None:
    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    out, card = tmp_path / "m.json", tmp_path / "card.md"
    argv = ["--data", str(eegmat_dir), "--subjects", "Subject00,Subject01,Subject03", "--folds", "3"]
    args = p.parse_args([*argv, "--json", str(out), "--card", str(card), "--no-progress"])
    assert eval_encoder(args) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["subjects"] == ["Subject00", "Subject01", "Subject03"] and len(r["folds"]) == 3
    assert r["windows"]["rest"] > 3 * 600 and r["windows"]["task"] > 3 * 200
    for feats in ("latent", "latent_z", "bandpower"):
        assert 0.0 <= r["probe"][feats]["pooled"] <= 1.0 and len(r["probe"][feats]["folds"]) == 3
    assert r["val_subjects"] == ["Subject03"]  # the committed model never trained on Subject03
    assert set(r["probe_val_subjects"]) == {"latent", "latent_z", "bandpower"}
    cb = r["codebook"]
    assert 1.0 <= cb["perplexity_val"] <= 64 and 1 <= cb["codes_used_all"] <= 64
    assert sum(s for _, s in cb["per_condition"]["rest"]["top"]) <= 1.0 + 1e-6
    assert r["similarity"]["within_subject"] > 0 and r["similarity"]["subject_ratio"] > 0
    assert "Rest vs mental arithmetic" in printed and read_section(card, "metrics") == format_report(r).strip()


def test_eval_needs_rest_and_task_sessions(tmp_path: Path, eegmat_dir: Path) -> None:
    with pytest.raises(DataError, match="at least two eegmat subjects"):
        evaluate(eegmat_dir, Settings(), subjects=["Subject00"], progress=False)
