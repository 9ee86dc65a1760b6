#!/usr/bin/env bash
# Installs raylm and everything it needs on a fresh machine (Debian/Ubuntu, Python >= 3.10).
# torch is pinned to the 2.13.0 CPU wheel here: an unpinned torch pulls a multi-GB CUDA build.
# On a GPU machine, install your CUDA torch first and run: pip install -e ".[test,keras]"
# (the keras extra brings TensorFlow + tf-keras + tfmot + LiteRT for model.backend: keras).
set -euo pipefail
cd "$(dirname "$0")"
# espeak-ng speaks the audio demo's words (without it the demo falls back to synthetic tones);
# chromium + chromium-driver render the run report once in a real browser (that test skips without them).
missing=""
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium chromium-driver"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "setup.sh: not installed:$missing (audio demo uses synthetic tones; the browser test skips)" >&2
  fi
fi
python3 -m pip install -q "torch==2.13.0" -e ".[test,keras]"
# The MLflow tracking server for tests/test_mlflow.py (raylm needs only the client, mlflow-skinny,
# from the test extra): the full mlflow package pins pyarrow<26 while Ray needs 26, so it lives in its
# own virtualenv, created once.
if [ ! -x .venv-mlflow/bin/mlflow ]; then
  python3 -m venv .venv-mlflow && .venv-mlflow/bin/pip install -q "mlflow==3.17.2"
fi
