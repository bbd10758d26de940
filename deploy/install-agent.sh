#!/bin/sh
# profilemate-install-agent DEST — copy the agent and the Python hook of this image into a
# host directory shared with vLLM pods (the DaemonSet's init container runs this).
#
# Layout: DEST/releases/<content hash>/{lib/libprofilemate.so,pyhook/}, and DEST/current, a
# relative symlink to the newest release. A release directory is never written again once
# complete: running vLLM processes keep mapping the library they loaded (overwriting a mapped
# .so in place would crash them), and new pods pick up `current`. Old releases are left for
# the operator to remove once no pod uses them.
set -eu
dest=${1:?usage: profilemate-install-agent DEST}
src=${PROFILEMATE_SRC:-/opt/profilemate-trace}
hash=$(cd "$src" && find lib pyhook -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)
rel="$dest/releases/$hash"
umask 022
mkdir -p "$dest/releases"
if [ ! -f "$rel/.complete" ]; then
	tmp="$dest/releases/.tmp-$hash-$$"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	cp -R "$src/lib" "$src/pyhook" "$tmp/"
	touch "$tmp/.complete"
	rm -rf "$rel"
	mv "$tmp" "$rel"
fi
ln -sfn "releases/$hash" "$dest/current.tmp"
mv -T "$dest/current.tmp" "$dest/current"
echo "profilemate-trace: agent and hook installed in $rel ($dest/current)"
