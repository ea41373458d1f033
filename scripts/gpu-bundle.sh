#!/usr/bin/env bash
# gpu-bundle.sh: on this (CPU) machine, build pgolf with CUDA and assemble .gpu/, the folder that a
# GPU machine needs for scripts/gpu-check.sh: the GPU programs (the ones gpu-check.sh lists, with
# pgverify and the Python benchmark bench_gpu_eval.py, which finds pgverify beside it), the
# shared libraries they need beyond glibc, and, for a build from source there when the prebuilt
# programs cannot run, the Debian development packages' files unpacked into .gpu/sysroot (headers,
# static archives, pkg-config files, pkgconf itself). .gpu/ is added to .git/info/exclude: only an
# ignored folder named in the device call's `carry` travels.
#
# The programs link the compression libraries, libstdc++ and the CUDA runtime statically
# (-Dprefer_static=true; cudart_static is the project's default), so the device needs only glibc,
# libgcc_s and its driver; Criterion stays shared (Debian lacks parts of its static closure) and
# its .so closure is carried in .gpu/lib. glibc itself (libc, libm, ld.so, ...) is never carried,
# nor libgcc_s (every system with a C compiler has it; a static libgcc would call _dl_find_object
# and need glibc 2.35). The script prints the newest GLIBC_ symbol version the bundle needs.
#
# Environment: GPU_BUILD_DIR (default build-gpu), GPU_ARCH (default 90: H100, H200), GPU_DEB_CACHE
# (where downloaded .deb files are kept; default $GPU_BUILD_DIR/debs).
# Exit status: 0 bundle written, 2 error.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${GPU_BUILD_DIR:-build-gpu}
ARCH=${GPU_ARCH:-90}
DEBS=${GPU_DEB_CACHE:-$B/debs}
G=.gpu
MULTI=x86_64-linux-gnu
# The development packages of the build from source (scripts/setup.sh's libraries; SentencePiece is
# optional and not needed by the GPU programs), and pkgconf, which a bare image may lack.
DEV_PKGS=(libzstd-dev libbrotli-dev liblzma-dev zlib1g-dev libxxhash-dev libjansson-dev
          libcriterion-dev pkgconf pkgconf-bin libpkgconf3)
# glibc's own libraries and libgcc_s: the device's are used, never ours.
GLIBC_LIBS='^(linux-vdso|ld-linux-x86-64|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libanl'
GLIBC_LIBS+='|libutil|libnsl|libBrokenLocale|libc_malloc_debug|libthread_db|libgcc_s)\.so'

die() { echo "gpu-bundle: $*" >&2; exit 2; }
trap 'echo "gpu-bundle: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
[ "$(uname -m)" = x86_64 ] || die "the GPU machines are x86-64; this machine is $(uname -m)"
for t in meson ninja objdump readelf dpkg-deb apt-get ldd; do
  command -v "$t" >/dev/null || die "$t not found"
done
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
command -v nvcc >/dev/null || die "nvcc not found (install the CUDA toolkit, or put it on PATH)"

mapfile -t PROGS < <(bash scripts/gpu-check.sh --list-programs)
[ ${#PROGS[@]} -gt 0 ] || die "scripts/gpu-check.sh --list-programs named no program"

# 1. The build: its own directory, CUDA for sm_$ARCH (SASS plus PTX, kernels/meson.build).
echo "gpu-bundle: building ${PROGS[*]} in $B (CUDA sm_$ARCH, static where Debian has archives)"
opts=(-Dcuda=enabled "-Dcuda-arch=$ARCH" -Dprefer_static=true -Dbuildtype=release)
log=$(mktemp "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")
trap 'rm -f "$log"; rm -rf "$G.tmp"' EXIT
if [ -f "$B/build.ninja" ]; then
  meson setup --reconfigure "$B" "${opts[@]}" >"$log" 2>&1 ||
    { cat "$log"; die "meson setup failed"; }
else
  meson setup "$B" "${opts[@]}" >"$log" 2>&1 || { cat "$log"; die "meson setup failed"; }
fi
ninja -C "$B" "${PROGS[@]}" >"$log" 2>&1 ||
  { grep -v '^\[[0-9]*/[0-9]*\] ' "$log" | tail -n 100; die "build failed"; }

# 2. The programs and the shared libraries they need beyond glibc (by their SONAME, as ldd names
# them), checked to resolve from .gpu/lib alone.
rm -rf "$G.tmp"
mkdir -p "$G.tmp/bin" "$G.tmp/lib"
for p in "${PROGS[@]}"; do
  cp "$B/$p" "$G.tmp/bin/"
  # a script (bench_gpu_eval.py) runs under the machine's interpreter: nothing to strip or link
  [ "$(od -An -c -N4 "$B/$p" | tr -d ' ')" = '177ELF' ] || continue
  strip --strip-unneeded "$G.tmp/bin/${p##*/}"
  ldd "$B/$p" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r soname path; do
    [[ $soname =~ $GLIBC_LIBS ]] && continue
    [ -e "$G.tmp/lib/$soname" ] || cp -L "$path" "$G.tmp/lib/$soname"
  done
  if ! ldd "$B/$p" | grep -q 'not found'; then
    missing=$(LD_LIBRARY_PATH="$G.tmp/lib" ldd "$G.tmp/bin/${p##*/}" |
              awk '$2 == "=>" {print $1, $3}' | grep -Ev "$GLIBC_LIBS" | grep -v " $G.tmp/lib/" ||
              true)
    [ -z "$missing" ] || die "${p##*/} resolves outside the bundle: $missing"
  else
    die "$B/$p has unresolved libraries here: $(ldd "$B/$p" | grep 'not found' | tr -s ' \n' ' ')"
  fi
done

# 3. The fallback: the development packages' files, unpacked into the bundle (never into /).
mkdir -p "$DEBS"
( cd "$DEBS" && apt-get download "${DEV_PKGS[@]}" >/dev/null 2>&1 ) ||
  die "apt-get download ${DEV_PKGS[*]} failed (network?)"
S="$G.tmp/sysroot"
mkdir -p "$S"
: >"$G.tmp/PACKAGES"
for pkg in "${DEV_PKGS[@]}"; do
  deb=$(ls -t "$DEBS/${pkg}_"*.deb 2>/dev/null | head -n 1)
  [ -n "$deb" ] || die "no .deb of $pkg in $DEBS"
  dpkg-deb -x "$deb" "$S"
  dpkg-deb -f "$deb" Package Version | paste -sd ' ' >>"$G.tmp/PACKAGES"
done
rm -rf "$S/usr/share/doc" "$S/usr/share/man" "$S/usr/share/lintian" "$S/usr/share/aclocal" \
       "$S/usr/lib/$MULTI/cmake" "$S/usr/lib/$MULTI/libcriterion.a"
# Development links: the libraries with archives link statically there too (their .so links go);
# libcriterion.so points at the carried runtime library.
L="$S/usr/lib/$MULTI"
for f in "$L"/*.so; do
  [ -L "$f" ] || continue
  name=${f##*/}
  if [ "$name" = libcriterion.so ]; then
    ln -sfn "../../../../lib/$(cd "$G.tmp/lib" && ls libcriterion.so.* | head -n 1)" "$f"
  elif [ ! -e "$f" ]; then
    rm -f "$f"
  fi
done
[ -e "$L/libcriterion.so" ] || die "libcriterion.so does not resolve into $G/lib"
# Some .pc files name /usr/lib where Debian puts the library in the multiarch directory (zstd):
# point them at it, or the link would take a system library, or none.
sed -i -E "s#^(libdir=\\\$\{(exec_)?prefix\})/lib/?\$#\\1/lib/$MULTI#" "$L"/pkgconfig/*.pc
# Criterion's pkg-config file requires these for its static flags, which the shared link does not
# use: a file each that names the module and adds nothing.
for m in boxfort libffi libgit2 nanomsg; do
  printf 'Name: %s\nDescription: %s\nVersion: 0\n' "$m" \
    'stub (libcriterion is linked shared; see scripts/gpu-bundle.sh)' >"$L/pkgconfig/$m.pc"
done

# 4. The glibc that everything in the bundle needs, per file and overall.
glibc_of() {
  objdump -T "$1" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sort -Vu | tail -n 1 || true
}
need=""
{
  echo "# what needs which glibc (the newest GLIBC_ symbol version each file references)"
  while IFS= read -r f; do
    v=$(glibc_of "$f")
    [ -n "$v" ] || continue
    echo "${f#"$G.tmp/"} $v"
    need=$(printf '%s\n%s\n' "$need" "$v" | sed '/^$/d' | sort -V | tail -n 1)
  done < <(find "$G.tmp" -type f \( -path '*/bin/*' -o -name '*.so*' \) | sort)
  echo "GLIBC_REQUIRED ${need:-none}"
} >"$G.tmp/GLIBC"
need=$(awk '$1 == "GLIBC_REQUIRED" {print $2}' "$G.tmp/GLIBC")
# libstdc++ is linked statically: nothing may need the device's (its version is not known).
cxx=$(find "$G.tmp/bin" "$G.tmp/lib" -type f -exec objdump -T {} + 2>/dev/null |
      grep -o 'GLIBCXX_[0-9.]*' | sort -Vu | tail -n 1 || true)
[ -z "$cxx" ] || die "the bundle needs the device's libstdc++ ($cxx): link it statically"

# 5. The manifest, then the bundle replaces the old one.
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+changes"
{
  echo "commit $commit"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME")," \
    "$(ldd --version | head -n 1)"
  echo "nvcc $(nvcc --version | grep -o 'release [0-9.]*' | cut -d' ' -f2)"
  echo "cuda-arch $ARCH (SASS sm_$ARCH and PTX compute_$ARCH)"
  echo "meson-options ${opts[*]}"
  echo "glibc-required ${need#GLIBC_}"
  echo "programs ${PROGS[*]##*/}"
  # not carried (hundreds of MB): the CUDA engine's fast bf16 mode loads it from the device's
  # toolkit
  echo "loaded-at-run-time libcublas.so.$(nvcc --version | grep -o 'release [0-9]*' |
    cut -d' ' -f2)"
} >"$G.tmp/MANIFEST"
excl=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$excl")"
grep -qxF "/$G/" "$excl" 2>/dev/null || echo "/$G/" >>"$excl"
rm -rf "$G"
mv "$G.tmp" "$G"

echo "gpu-bundle: wrote $G ($(du -sh "$G" | cut -f1), $(find "$G" -type f | wc -l) files):"
echo "  bin/     $(ls "$G/bin" | tr '\n' ' ')($(du -sh "$G/bin" | cut -f1))"
echo "  lib/     $(ls "$G/lib" | wc -l) shared libraries ($(du -sh "$G/lib" | cut -f1))"
echo "  sysroot/ ${#DEV_PKGS[@]} packages for a build from source" \
  "($(du -sh "$G/sysroot" | cut -f1))"
echo "gpu-bundle: commit $commit; the bundle needs glibc >= ${need#GLIBC_} (${need})"
echo "gpu-bundle: run it there with carry [\"$G\"]: bash scripts/gpu-check.sh"
