"""``overnight models list`` and ``overnight models prepare``."""

from __future__ import annotations

import argparse
from pathlib import Path

from overnight.cli import models


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="overnight")
    models.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_list_shows_every_model_and_whether_it_is_prepared(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert run(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("smollm2-135m", "llama-3.1-8b", "bge-small-en-v1.5"):
        assert name in out
    assert "no: models prepare" in out


def test_prepare_an_already_prepared_model(smollm2_path: Path, cache_dir: Path, capsys):
    assert run(["models", "prepare", "smollm2-135m", "--cache-dir", str(cache_dir)]) == 0
    assert f"smollm2-135m ready at {smollm2_path}" in capsys.readouterr().out


def test_prepare_errors_exit_non_zero(tmp_path: Path, capsys):
    assert run(["models", "prepare", "gpt-9"]) == 2
    assert "unknown model 'gpt-9'" in capsys.readouterr().err
    models_file = tmp_path / "m.json"
    models_file.write_text('{"models": {"x": {"source": "%s"}}}' % (tmp_path / "none"))
    assert run(["models", "prepare", "x", "--models-file", str(models_file)]) == 1
    assert f"local path {tmp_path / 'none'} does not exist" in capsys.readouterr().err
