#!/usr/bin/env bash
# Gathers what a bare GPU machine lacks to build and benchmark torchship into .gpu_deps/ (git-ignored),
# laid out like /usr so CMAKE_PREFIX_PATH finds it: Debian's headers, libraries
# and CMake/pkg-config files for cpp-httplib, spdlog, fmt, CLI11, nlohmann-json, GoogleTest and tcmalloc,
# plus wrk and pkgconf. Run here, after tools/bootstrap.sh installed them; benchmarks/gpu.sh uses the result.
#
#   tools/gpu_deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
out=.gpu_deps
rm -rf "$out"
mkdir -p "$out/include" "$out/lib/$arch/cmake" "$out/lib/$arch/pkgconfig" "$out/share/cmake" "$out/bin"

cp -a /usr/include/httplib.h /usr/include/spdlog /usr/include/fmt /usr/include/CLI /usr/include/nlohmann \
  /usr/include/gtest "$out/include/"
# httplib.h includes the headers of the TLS and compression libraries Debian built it with.
cp -a /usr/include/brotli /usr/include/openssl /usr/include/zlib.h /usr/include/zconf.h "$out/include/"
cp -a "/usr/include/$arch/openssl/"* "$out/include/openssl/"  # Debian keeps the arch-specific two apart
cp -a /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$out/share/cmake/"
cp -a "/usr/lib/$arch/cmake/spdlog" "/usr/lib/$arch/cmake/fmt" "/usr/lib/$arch/cmake/GTest" "$out/lib/$arch/cmake/"
for lib in libcpp-httplib.so libspdlog.so libfmt.so libtcmalloc_minimal.so libluajit-5.1.so libpkgconf.so \
  libbrotlicommon.so libbrotlidec.so libbrotlienc.so; do
  cp -a "/usr/lib/$arch/$lib"* "$out/lib/$arch/"
done
cp -a "/usr/lib/$arch/"libgtest*.a "$out/lib/$arch/"
rm -f "$out/lib/$arch/"*debug*

# cpp-httplib's .pc without Requires.private (the GPU image has the runtime libraries, not their .pc files),
# relative to where it lies.
sed -e 's|^prefix=.*|prefix=${pcfiledir}/../../..|' -e '/^Requires.private/d' \
  "/usr/lib/$arch/pkgconfig/cpp-httplib.pc" >"$out/lib/$arch/pkgconfig/cpp-httplib.pc"

cp /usr/bin/wrk /usr/bin/pkgconf "$out/bin/"
du -sh "$out"
