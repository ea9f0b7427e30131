#!/usr/bin/env bash
# AEAD throughput on one core, 1,400-byte packets, CPU time: ipsec-sa's SAs
# (ring) against OpenSSL's EVP AEAD (`openssl speed`), in the same run.
# Prints one tab-separated line per suite: our seal, OpenSSL's encrypt, the
# ratio, and our seal+open (what a packet costs end to end).
# Usage: ipsec-sa/scripts/bench-aead.sh   (needs: openssl)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v openssl >/dev/null || { echo "openssl not installed" >&2; exit 1; }
ours=$(cargo bench -q -p ipsec-sa --bench cpu_throughput 2>/dev/null | grep 'GB/s')
printf 'suite\tipsec-sa seal GB/s\topenssl encrypt GB/s\tratio\tipsec-sa seal+open GB/s\n'
for pair in "Aes256Gcm aes-256-gcm" "ChaCha20Poly1305 chacha20-poly1305"; do
  read -r name evp <<<"$pair"
  line=$(grep "^$name	" <<<"$ours")
  seal=$(awk -F'\t' '{split($4, a, " "); print a[2]}' <<<"$line")
  both=$(awk -F'\t' '{split($2, a, " "); print a[2]}' <<<"$line")
  # `openssl speed` reports 1000s of bytes per second of user CPU time.
  peer=$(openssl speed -evp "$evp" -bytes 1400 -seconds 3 2>/dev/null \
    | tail -n 1 | awk '{v = $NF; sub(/k$/, "", v); printf "%.2f", v / 1e6}')
  ratio=$(awk -v a="$seal" -v b="$peer" 'BEGIN { printf "%.2f", a / b }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$seal" "$peer" "$ratio" "$both"
done
