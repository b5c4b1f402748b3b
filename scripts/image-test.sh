#!/usr/bin/env bash
# scripts/image-test.sh [IMAGE] — boots the Raspberry Pi image built by
# scripts/image.sh (default: the newest dist/ferry-*-rpi-arm64.img[.xz]) and
# proves it works as an appliance:
#
#   1. a 4 GiB "card" with the test's ferry.yaml put on the boot partition, as a
#      person would from a laptop (mtools, no mount);
#   2. boot 1 under qemu-system-aarch64 -M virt -cpu cortex-a53 with the
#      image's own kernel and initrd (the Pi's firmware and its
#      bcm2711/2712 device trees do not run under QEMU: the virt machine
#      boots the same generic Debian kernel and root file system); QEMU's
#      user-mode network forwards MQTT, Kafka and HTTP to loopback ports;
#   3. waits for ferry.service to answer /healthz (boot-to-ready time),
#      publishes with mosquitto_pub (QoS 1) and reads the records back with
#      kcat; the ferry.yaml from the boot partition must be in force (the
#      device token and the Kafka listener come from it);
#   4. publishes one message at a time and, mid-ingest, kills QEMU (a power
#      cut: no shutdown); each mosquitto_pub that exited 0 had its PUBACK;
#   5. puts a broken ferry.yaml on the boot partition, boots again with the
#      virtual RTC at 2000-01-01 (a Pi has no RTC), and checks that every
#      acknowledged message is there, the last good configuration stayed and
#      said so on the console, new records are not stamped before the power
#      cut (the clock was restored), and the data partition fills the card.
#
# Prints timings; exits non-zero on any failure. Needs qemu-system-arm,
# mosquitto-clients, kcat, mtools, fdisk, e2fsprogs, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
img=${1:-$(ls -t dist/ferry-*-rpi-arm64.img.xz dist/ferry-*-rpi-arm64.img 2>/dev/null | head -n1)}
[ -n "$img" ] || { echo "image-test: no image; run scripts/image.sh first" >&2; exit 2; }
base=${img%.xz}; base=${base%.img}
kernel=$base.vmlinuz initrd=$base.initrd
work=$(mktemp -d "${TMPDIR:-/var/tmp}/ferry-image-test.XXXXXX")
qemu_pid=""
cleanup() { [ -z "$qemu_pid" ] || kill -9 "$qemu_pid" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "image-test: FAIL: $*" >&2; grep -h "ferry-boot-config\|grow-data\|ferry.service" "$work"/serial-*.log >&2 || true; for f in "$work"/serial-*.log; do [ -f "$f" ] && { echo "--- $f (last 60 lines)"; tail -n 60 "$f"; }; done >&2; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mport=$(port) kport=$(port) hport=$(port)
token=IMAGE-TEST-TOKEN admin=image-test-admin

card=$work/card.img
case $img in *.xz) xz -dc "$img" > "$card" ;; *) cp --sparse=always "$img" "$card" ;; esac
truncate -s 4G "$card"
boot_off=$(( $(sfdisk -d "$card" | awk -F'[=,]' '/card.img1/ {print $2}') * 512 ))
put_boot() { mcopy -o -i "$card@@$boot_off" "$1" "::$2"; }

cat > "$work/ferry.yaml" <<EOF
node_id: image-test
http: {admin_token: $admin}
kafka: {listen: ":9092", advertised: "127.0.0.1:$kport"}
devices:
  - {name: sensor-1, type: thermometer, token: $token}
EOF
put_boot "$work/ferry.yaml" ferry.yaml

boot() { # boot N [extra qemu args...]
  local n=$1; shift
  qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 -display none -monitor none -no-reboot \
    -kernel "$kernel" -initrd "$initrd" \
    -append "root=LABEL=RASPIROOT rootwait console=ttyAMA0 net.ifnames=0" \
    -drive "file=$card,if=none,format=raw,id=d0" -device virtio-blk-pci,drive=d0 \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$mport-:1883,hostfwd=tcp:127.0.0.1:$kport-:9092,hostfwd=tcp:127.0.0.1:$hport-:8080" \
    -device virtio-net-pci,netdev=n0 -serial "file:$work/serial-$n.log" "$@" &
  qemu_pid=$!
  local start=$SECONDS
  until curl -sf -o /dev/null -H "Authorization: Bearer $admin" "http://127.0.0.1:$hport/healthz"; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited during boot $n"
    [ $((SECONDS - start)) -lt 900 ] || fail "ferry not ready 15 minutes into boot $n"
    sleep 2
  done
  ready=$((SECONDS - start))
  echo "image-test: boot $n: ferry ready ${ready} s after power-on"
}
pub() { mosquitto_pub -h 127.0.0.1 -p "$mport" -u "$token" -q 1 -t v1/devices/me/telemetry -m "{\"seq\":$1}"; }
records() { kcat -C -b "127.0.0.1:$kport" -t telemetry -o beginning -e -q -f '%T %s\n' 2>/dev/null | sed -n 's/^\([0-9]*\) .*"seq":\([0-9]*\).*/\1 \2/p'; }
seqs() { records | awk '{print $2}' | sort -n; }

boot 1
boot1_ready=$ready
for i in $(seq 1 20); do pub "$i" || fail "publish $i"; done
got=$(seqs | tr '\n' ' ')
[ "$got" = "$(seq 1 20 | tr '\n' ' ')" ] || fail "kcat read back [$got], want 1..20"
echo "image-test: 20 messages published with mosquitto_pub, read back with kcat"

# Ingest, then a power cut in the middle of it.
: > "$work/acked"
( i=1000; while pub "$i" 2>/dev/null; do echo "$i" >> "$work/acked"; i=$((i + 1)); done ) &
ingest=$!
sleep 25
kill -9 "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=""
wait "$ingest" 2>/dev/null || true
acked=$(wc -l < "$work/acked")
[ "$acked" -gt 0 ] || fail "nothing was acknowledged before the power cut"
echo "image-test: power cut after $acked acknowledged messages"

printf 'mqtt: {listen: 5}\n' > "$work/broken.yaml"
put_boot "$work/broken.yaml" ferry.yaml
boot 2 -rtc base=2000-01-01T00:00:00
records > "$work/records"
have=$(awk '{print $2}' "$work/records" | sort -n)
last_ts=$(awk -v s="$(tail -n1 "$work/acked")" '$2 == s {print $1}' "$work/records")
missing=$(comm -23 <(sort "$work/acked") <(echo "$have" | sort))
[ -z "$missing" ] || fail "acknowledged but lost after the power cut: $(echo $missing | head -c 300)"
echo "image-test: all $acked acknowledged messages there after the power cut ($(echo "$have" | grep -c '^1[0-9][0-9][0-9]') stored)"
grep -q "ferry.yaml on the boot partition NOT used" "$work/serial-2.log" || fail "the broken ferry.yaml was not reported on the console"
pub 99999 || fail "publish after boot 2 (the last good ferry.yaml should be in force)"
new_ts=$(records | awk '$2 == 99999 {print $1}')
[ -n "$new_ts" ] || fail "the message published after boot 2 is not in the log"
[ "$new_ts" -ge $((last_ts - 600000)) ] || fail "records after the power cut are stamped $new_ts, before the cut ($last_ts): the clock was not restored"
echo "image-test: the clock was restored (RTC at 2000; new record at $new_ts ms, last before the cut $last_ts ms)"
kill -9 "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=""

# The data partition grew to the end of the 4 GiB card at the first boot.
read -r dstart dsize < <(sfdisk -d "$card" | awk -F'[=,]' '/card.img3/ {print $2, $4}')
end=$(( (dstart + dsize) * 512 ))
[ "$end" -ge $(( $(stat -c %s "$card") - 1024 * 1024 )) ] || fail "the data partition ends at $end, the card at $(stat -c %s "$card")"
echo "image-test: data partition grown to $((dsize * 512 / 1024 / 1024)) MiB"
echo "image-test: passed; boot to ready ${boot1_ready} s (first boot), ${ready} s (after the power cut)"
