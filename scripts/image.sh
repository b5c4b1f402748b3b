#!/usr/bin/env bash
# scripts/image.sh [OUTDIR] — a Raspberry Pi 3/4/5 (arm64) SD-card image with
# Ferry installed, from Debian packages only (default OUTDIR: dist/).
#
#   dist/ferry-<version>-rpi-arm64.img.xz   flash with Raspberry Pi Imager or
#                                           xz -dc ... | sudo dd of=/dev/sdX bs=4M
#   dist/ferry-<version>-rpi-arm64.img      (KEEP_RAW=1) the same, uncompressed
#
# As Debian's own raspi images do: bookworm arm64 from deb.debian.org, the
# generic linux-image-arm64 kernel and raspi-firmware, built by mmdebstrap with
# qemu-user-static running the arm64 maintainer scripts (binfmt_misc). The
# card, MBR:
#   1  RASPIFIRM  FAT32  256 MiB  /boot/firmware: Pi firmware, kernel, and the
#                                 files edited from a laptop (ferry.yaml,
#                                 hostname, authorized_keys, wifi.conf)
#   2  RASPIROOT  ext4            / (Debian, ferry.deb)
#   3  FERRYDATA  ext4   128 MiB  /var/lib/ferry, grown to the end of the card
#                                 at first boot (ferry-grow-data.service)
# No loop devices or mounts: file systems are made from directories
# (mke2fs -d, mtools) and written into the image at their offsets.
# Needs root (chroot ownership), mmdebstrap, qemu-user-static, dosfstools,
# mtools, fdisk, e2fsprogs, xz-utils. Prints the timings and the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
t0=$(date +%s)

# arm64 maintainer scripts run under qemu-aarch64 through binfmt_misc.
if [ "$(uname -m)" != aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/ferry-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
deb=$(ARCHES=arm64 scripts/package.sh "$work/deb")
version=$(dpkg-deb -f "$deb" Version)
root=$work/root

# The root file system. Our files are in place before the packages that
# own them are configured, and kept (force-confold): the raspi-firmware
# root, the initramfs modules, and update_initramfs=no so the initramfs is
# made once, by the kernel's own hook, not again by every trigger (each
# run takes minutes under qemu-user; set back to yes for the board's own
# kernel updates). raspi-firmware's kernel hook copies the kernel,
# initrd and device trees to /boot/firmware and writes cmdline.txt with
# ROOTPART; the initramfs also carries the virtio drivers, so the same
# root file system boots under QEMU's virt machine (scripts/image-test.sh).
packages=(systemd systemd-sysv systemd-timesyncd udev dbus linux-image-arm64 raspi-firmware
  initramfs-tools firmware-brcm80211 wpasupplicant iw openssh-server sudo ca-certificates
  iproute2 cloud-guest-utils e2fsprogs dosfstools util-linux kmod less nano)
mmdebstrap --arch=arm64 --variant=minbase --components="main non-free-firmware" \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt=force-confold --dpkgopt=force-confdef \
  --setup-hook='mkdir -p "$1/etc/default" "$1/etc/initramfs-tools" "$1/boot/firmware"' \
  --setup-hook='echo "ROOTPART=LABEL=RASPIROOT" > "$1/etc/default/raspi-firmware"' \
  --setup-hook='printf "virtio_pci\nvirtio_blk\nvirtio_net\nvirtio_mmio\n" >> "$1/etc/initramfs-tools/modules"' \
  --setup-hook='echo "update_initramfs=no" > "$1/etc/initramfs-tools/update-initramfs.conf"' \
  --customize-hook='echo "update_initramfs=yes" > "$1/etc/initramfs-tools/update-initramfs.conf"' \
  --customize-hook="copy-in $deb /tmp" \
  --customize-hook='chroot "$1" dpkg -i /tmp/'"$(basename "$deb")" \
  --customize-hook='rm "$1"/tmp/*.deb' \
  --customize-hook="sync-in configs/image/rootfs /" \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd systemd-timesyncd ferry-boot-config ferry-grow-data ferry-save-clock.timer' \
  --customize-hook='printf "LABEL=RASPIROOT / ext4 rw,noatime,errors=remount-ro 0 1\nLABEL=RASPIFIRM /boot/firmware vfat rw,noatime,flush,fmask=0022,dmask=0022 0 2\nLABEL=FERRYDATA /var/lib/ferry ext4 rw,noatime,lazytime,nofail,x-systemd.before=ferry.service 0 2\n" > "$1/etc/fstab"' \
  --customize-hook='echo ferry-gateway > "$1/etc/hostname"; printf "127.0.0.1\tlocalhost\n127.0.1.1\tferry-gateway\n" > "$1/etc/hosts"' \
  --customize-hook='rm -f "$1/etc/machine-id" "$1"/etc/ssh/ssh_host_*; : > "$1/etc/machine-id"' \
  --customize-hook='chroot "$1" passwd --lock root' \
  --customize-hook='cp configs/deb/ferry.yaml "$1/boot/firmware/ferry.yaml"; cp configs/image/boot/* "$1/boot/firmware/"' \
  "$suite" "$root" "$mirror"
t1=$(date +%s)

# SSH host keys are made at first boot (openssh's own unit needs them).
mkdir -p "$root/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n' > "$root/etc/systemd/system/ssh.service.d/host-keys.conf"
# The kernel and initrd for QEMU, next to the image.
cp "$(ls "$root"/boot/vmlinuz-* | tail -n1)" "$out/ferry-$version-rpi-arm64.vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | tail -n1)" "$out/ferry-$version-rpi-arm64.initrd"

# Split the tree into the three file systems.
mkdir -p "$work/boot" "$work/data"
cp -a "$root/boot/firmware/." "$work/boot/"
rm -rf "$root/boot/firmware" && mkdir "$root/boot/firmware"
cp -a "$root/var/lib/ferry/." "$work/data/" 2>/dev/null || true
chown --reference="$root/var/lib/ferry" "$work/data"; chmod 0750 "$work/data"
rm -rf "$root/var/lib/ferry" && mkdir -m 0750 "$root/var/lib/ferry" && chown --reference="$work/data" "$root/var/lib/ferry"

mib=$((1024 * 1024))
boot_mib=256 data_mib=128
root_mib=$(( $(du -s --block-size=1M "$root" | cut -f1) * 13 / 10 + 64 ))
mkfs.vfat -F 32 -n RASPIFIRM -C "$work/boot.fs" $((boot_mib * 1024)) >/dev/null
mcopy -s -i "$work/boot.fs" "$work/boot/"* ::/
mke2fs -q -t ext4 -L RASPIROOT -d "$root" "$work/root.fs" "${root_mib}M"
mke2fs -q -t ext4 -L FERRYDATA -d "$work/data" "$work/data.fs" "${data_mib}M"

img=$out/ferry-$version-rpi-arm64.img
total=$((4 + boot_mib + root_mib + data_mib))
rm -f "$img"
truncate -s "$((total * mib))" "$img"
sfdisk --quiet "$img" <<EOF
label: dos
start=4MiB, size=${boot_mib}MiB, type=c, bootable
size=${root_mib}MiB, type=83
size=${data_mib}MiB, type=83
EOF
dd if="$work/boot.fs" of="$img" bs=1M seek=4 conv=notrunc status=none
dd if="$work/root.fs" of="$img" bs=1M seek=$((4 + boot_mib)) conv=notrunc status=none
dd if="$work/data.fs" of="$img" bs=1M seek=$((4 + boot_mib + root_mib)) conv=notrunc status=none
t2=$(date +%s)
xz -T0 -6 -k -f "$img"
[ -n "${KEEP_RAW:-}" ] || rm -f "$img"
t3=$(date +%s)

echo "image: $img.xz"
echo "version $version; root file system ${root_mib} MiB, card $total MiB"
echo "compressed $(( $(stat -c %s "$img.xz") / mib )) MiB ($(stat -c %s "$img.xz") bytes)"
echo "time: mmdebstrap $((t1 - t0)) s, file systems $((t2 - t1)) s, xz $((t3 - t2)) s, total $((t3 - t0)) s"
