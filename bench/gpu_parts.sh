# Splitting a file into parts that each travel to the GPU machine in a device
# call of their own, and joining them again there. Sourced, not run:
# bench/gpu_prepare.sh splits (here), bench/gpu_check.sh joins (there), and
# tests/test_gpu_check.py runs both halves on a small file.
#
# Why parts: one remote run carries at most 64 MiB (working tree included) and
# the onnxruntime-gpu wheel is about 245 MiB. Why one folder per part: a call's
# `carry` names whole paths, and a part carried earlier stays on the warm
# machine only if the next call does not carry its folder again.
#
# Layout under ROOT:
#   ROOT/part1/NAME.part1  ROOT/part2/NAME.part2  ...
#   ROOT/partK/MANIFEST    the same text in every part folder, so whichever call
#                          arrives last brings it:
#       file NAME BYTES SHA256
#       part 1 BYTES SHA256
#       part 2 BYTES SHA256 ...

_gpu_sha() { sha256sum "$1" | cut -d' ' -f1; }

# gpu_split FILE PART_BYTES ROOT: cut FILE into ROOT/partN folders (earlier
# parts under ROOT are removed first); prints the number of parts.
gpu_split() {
  local file=$1 bytes=$2 root=$3 name tmp piece manifest i=0
  name=$(basename "$file")
  mkdir -p "$root"
  rm -rf "$root"/part[0-9]*
  tmp=$(mktemp -d "$root/.split.XXXXXX")
  split -b "$bytes" -d -a 4 "$file" "$tmp/p." || { rm -rf "$tmp"; return 1; }
  manifest="file $name $(stat -c %s "$file") $(_gpu_sha "$file")"
  for piece in "$tmp"/p.*; do  # split's numeric suffixes sort in order
    i=$((i + 1))
    mkdir -p "$root/part$i"
    mv "$piece" "$root/part$i/$name.part$i"
    manifest+=$'\n'"part $i $(stat -c %s "$root/part$i/$name.part$i") $(_gpu_sha "$root/part$i/$name.part$i")"
  done
  rmdir "$tmp"
  for ((k = 1; k <= i; k++)); do printf '%s\n' "$manifest" > "$root/part$k/MANIFEST"; done
  echo "$i"
}

# The manifest of the parts under ROOT, from any part folder; fails when none
# is there or when two disagree (parts of two different preparations).
_gpu_manifest() {
  local root=$1 first="" m
  for m in "$root"/part[0-9]*/MANIFEST; do
    [ -f "$m" ] || continue
    if [ -z "$first" ]; then
      first=$m
    elif ! cmp -s "$first" "$m"; then
      echo "parts under $root come from different preparations ($first and $m differ): run bench/gpu_prepare.sh and send every part again" >&2
      return 1
    fi
  done
  [ -n "$first" ] || { echo "no wheel parts under $root" >&2; return 1; }
  cat "$first"
}

# gpu_parts_status ROOT: one line per part (ok, missing or damaged) and a
# total; returns 0 when every part is there and intact, 1 otherwise.
gpu_parts_status() {
  local root=$1 manifest kind n bytes sha name total have=0 bad=0 path
  manifest=$(_gpu_manifest "$root") || return 1
  read -r kind name bytes sha <<< "$(head -n 1 <<< "$manifest")"
  total=$(grep -c '^part ' <<< "$manifest")
  while read -r kind n bytes sha; do
    path="$root/part$n/$name.part$n"
    if [ ! -f "$path" ]; then
      echo "part $n of $total: missing"
    elif [ "$(stat -c %s "$path")" != "$bytes" ] || [ "$(_gpu_sha "$path")" != "$sha" ]; then
      echo "part $n of $total: damaged (size or checksum differs from the manifest)"
      bad=$((bad + 1))
    else
      echo "part $n of $total: ok"
      have=$((have + 1))
    fi
  done < <(grep '^part ' <<< "$manifest")
  if [ "$bad" -gt 0 ]; then
    echo "$name: $have of $total parts here, $bad damaged"
  else
    echo "$name: $have of $total parts here"
  fi
  [ "$have" = "$total" ]
}

# gpu_join ROOT DIR: the parts joined into DIR/NAME, checked against the
# manifest; prints the joined file's path.
gpu_join() {
  local root=$1 dir=$2 manifest kind name bytes sha n out
  manifest=$(_gpu_manifest "$root") || return 1
  gpu_parts_status "$root" > /dev/null || { gpu_parts_status "$root" >&2; return 1; }
  read -r kind name bytes sha <<< "$(head -n 1 <<< "$manifest")"
  mkdir -p "$dir"
  out="$dir/$name"
  : > "$out"
  for n in $(grep '^part ' <<< "$manifest" | cut -d' ' -f2); do
    cat "$root/part$n/$name.part$n" >> "$out"
  done
  if [ "$(stat -c %s "$out")" != "$bytes" ] || [ "$(_gpu_sha "$out")" != "$sha" ]; then
    echo "joined $out does not match the manifest" >&2
    return 1
  fi
  echo "$out"
}

# gpu_plan_calls CAPACITY PATH...: the paths grouped into remote runs, in
# order, each group's total size (du -sb) at most CAPACITY bytes; one line per
# call, the paths separated by spaces. Fails if one path alone is too big.
gpu_plan_calls() {
  local capacity=$1 path size used=0 line=""
  shift
  for path in "$@"; do
    size=$(du -sb "$path" | cut -f1)
    if [ "$size" -gt "$capacity" ]; then
      echo "$path ($size bytes) is larger than one call carries ($capacity bytes)" >&2
      return 1
    fi
    if [ -n "$line" ] && [ $((used + size)) -gt "$capacity" ]; then
      echo "$line"
      line="" used=0
    fi
    line+="${line:+ }$path"
    used=$((used + size))
  done
  [ -z "$line" ] || echo "$line"
}
