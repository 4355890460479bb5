#!/bin/sh
# Builds bench/loadgen.py's C media loop: bench/loadgen_c/build/libloadgen.so (bench only, not part of
# the gateway). Needs gcc, libsrtp2 headers (the library itself is pylibsrtp's, opened at run time: see
# loadgen.c) and libcrypto; installs Debian's libsrtp2-dev/libssl-dev
# with apt-get when they are missing and we are root (the bench is not part of CI).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
missing=""
[ -f /usr/include/srtp2/srtp.h ] || missing="$missing libsrtp2-dev"
[ -f /usr/include/openssl/hmac.h ] || missing="$missing libssl-dev"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "loadgen_c: installing$missing" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >&2
    else
        echo "loadgen_c: missing$missing (Debian packages)" >&2
        exit 1
    fi
fi
mkdir -p "$here/build"
gcc -O2 -g -Wall -Wextra -std=gnu11 -shared -fPIC -o "$here/build/libloadgen.so.tmp" "$here/loadgen.c" \
    -lcrypto -lpthread -ldl
mv "$here/build/libloadgen.so.tmp" "$here/build/libloadgen.so"
echo "$here/build/libloadgen.so"
