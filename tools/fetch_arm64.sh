#!/usr/bin/env bash
# Fetches the arm64 side the QEMU tests and the kernel module need, resolved at
# run time (never a hard-coded ABI): Debian's arm64 kernel Image, its headers
# (+ the matching x86_64 kbuild tools) and busybox-static. Downloads are cached
# outside the work tree so a fresh clone does not refetch.
# Usage: fetch_arm64.sh OUT_ENV   (writes shell variables describing the result)
set -euo pipefail
out_env=$1
cache=${PKVM_CACHE:-/var/cache/pkvm-arm64}
mkdir -p "$cache"
sudo=(); [[ $(id -u) -ne 0 ]] && sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "fetch_arm64: enabling the arm64 architecture (multiarch)"
  "${sudo[@]}" dpkg --add-architecture arm64
  "${sudo[@]}" apt-get update -qq || { echo "fetch_arm64: ERROR: apt-get update failed" >&2; exit 1; }
fi
resolve_abi() { apt-cache depends linux-image-arm64:arm64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)-arm64:arm64$/\1/p' | head -1; }
abi=$(resolve_abi)
if [[ -z "$abi" ]]; then
  "${sudo[@]}" apt-get update -qq || true
  abi=$(resolve_abi)
fi
[[ -n "$abi" ]] || { echo "fetch_arm64: ERROR: cannot resolve linux-image-arm64:arm64 (apt lists?)" >&2; exit 1; }

fetch() {  # fetch PACKAGE[:arch] -> path of the .deb in the cache
  local pkg=$1 ver file esc base=${1%%:*}
  ver=$(apt-cache policy "$pkg" | sed -n 's/^  Candidate: //p')
  [[ -n "$ver" && "$ver" != "(none)" ]] || { echo "fetch_arm64: ERROR: no candidate for $pkg" >&2; return 1; }
  esc=${ver//:/%3a}
  file=$(ls "$cache/${base}_${esc}_"*.deb 2>/dev/null | head -1 || true)
  if [[ -z "$file" ]]; then
    echo "fetch_arm64: downloading $pkg $ver" >&2
    (cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >/dev/null) ||
      { echo "fetch_arm64: ERROR: download of $pkg failed" >&2; return 1; }
    file=$(ls "$cache/${base}_${esc}_"*.deb 2>/dev/null | head -1 || true)
    [[ -n "$file" ]] || { echo "fetch_arm64: ERROR: $pkg downloaded but not found in $cache" >&2; return 1; }
  fi
  echo "$file"
}

img_deb=$(fetch "linux-image-$abi-arm64:arm64")
hdr_deb=$(fetch "linux-headers-$abi-arm64:arm64")
common_deb=$(fetch "linux-headers-$abi-common")
bb_deb=$(fetch "busybox-static:arm64")
kver=$(apt-cache policy "linux-headers-$abi-arm64:arm64" | sed -n 's/^  Candidate: //p')
kbuild_pkg=linux-kbuild-$(echo "$abi" | cut -d. -f1,2)
if ! dpkg-query -W -f='${Version}' "$kbuild_pkg" 2>/dev/null | grep -qxF "$kver"; then
  echo "fetch_arm64: installing $kbuild_pkg=$kver"
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$kbuild_pkg=$kver" >/dev/null ||
    { echo "fetch_arm64: ERROR: cannot install $kbuild_pkg=$kver" >&2; exit 1; }
fi

# Unpack once per ABI.
root=$cache/unpacked-$abi
if [[ ! -f $root/.done ]]; then
  rm -rf "$root"; mkdir -p "$root"
  dpkg-deb --fsys-tarfile "$img_deb" | tar -xO "./boot/vmlinuz-$abi-arm64" > "$root/Image"
  dpkg-deb -x "$hdr_deb" "$root/hdr"
  dpkg-deb -x "$common_deb" "$root/hdr"
  dpkg-deb -x "$bb_deb" "$root/busybox"
  # Out-of-tree module builds: the headers' scripts/ and tools/ point at
  # ../../lib/linux-kbuild-X (the x86_64 kbuild package), and the arch
  # Makefile includes the common tree by absolute /usr/src path.
  kb=$(echo "$abi" | cut -d. -f1,2)
  mkdir -p "$root/hdr/usr/lib"
  ln -sfn "/usr/lib/linux-kbuild-$kb" "$root/hdr/usr/lib/linux-kbuild-$kb"
  sed -i "s|^include /usr/src/|include $root/hdr/usr/src/|" "$root/hdr/usr/src/linux-headers-$abi-arm64/Makefile"
  touch "$root/.done"
fi
cat > "$out_env.tmp" <<ENV
PKVM_KERNEL_ABI=$abi-arm64
PKVM_KERNEL_VERSION=$kver
PKVM_IMAGE=$root/Image
PKVM_HEADERS_ROOT=$root/hdr
PKVM_KDIR=$root/hdr/usr/src/linux-headers-$abi-arm64
PKVM_BUSYBOX=$root/busybox/bin/busybox
ENV
mv "$out_env.tmp" "$out_env"
echo "fetch_arm64: kernel $abi-arm64 ($kver) ready in $root"
