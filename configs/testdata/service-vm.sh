#!/bin/bash
# The service checks run inside a Debian VM booted by TestServiceOnSystemd
# (configs/service_test.go), with systemd as PID 1: what a chroot cannot
# show. Each result is one line on the console, "VMTEST: ok NAME",
# "VMTEST: FAIL NAME: why" or "VMTEST: measured NAME=VALUE"; the test reads
# them back and wants every NAME it knows. The last line is "VMTEST: done",
# then the VM powers off.
set -u
export SYSTEMD_PAGER= SYSTEMD_COLORS=0
say() { echo "VMTEST: $*"; }
check() { # name, command...: ok or FAIL with the command's output
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		say "ok $name"
	else
		say "FAIL $name: $(echo "$out" | tail -5 | tr '\n' ' ') journal: $(journal | tail -5 | tr '\n' ' ')"
	fi
}
waitfor() { # seconds, command...
	local end=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -ge $end ] && return 1
		sleep 0.5
	done
}
prop() { systemctl show -P "$1" ferry.service; }
active() { [ "$(prop ActiveState)" = active ]; }
journal() { journalctl -q -o cat -u ferry.service; }
get() { # an HTTP GET to the daemon with bash alone: the response
	exec 3<>/dev/tcp/127.0.0.1/8080 || return 1
	printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$1" >&3
	cat <&3
	exec 3<&-
}
healthz() { get /healthz | head -1 | grep -q ' 200 '; }
# polled: the meter's polls reached the line and timed out (nothing
# answers on ttyS1), so the port opened; none failed to connect.
polled() {
	local m
	m=$(get /metrics) || return 1
	grep -q '^ferry_adapter_poll_errors_total{bus="line-1",device="meter-1",kind="timeout"} [1-9]' <<<"$m" &&
		! grep -q '^ferry_adapter_poll_errors_total{bus="line-1",device="meter-1",kind="connection"}' <<<"$m"
}
in_cgroup() { # open a device from inside the service's cgroup
	timeout 10 bash -c 'echo $$ >/sys/fs/cgroup/system.slice/ferry.service/cgroup.procs && exec 4<>"$1"' _ "$1"
}

say "start $(uname -r) $(systemctl --version | head -1)"

# The image's hardware watchdog setting: PID 1 runs the board's watchdog.
check hardware-watchdog waitfor 60 bash -c '[ "$(systemctl show -P RuntimeWatchdogUSec)" = 15s ] && grep -qx active /sys/class/watchdog/watchdog0/state'

# Install on a running systemd: postinst enables and starts it, and it is
# "active" only after READY=1 (Type=notify).
t0=$SECONDS
check install dpkg -i /root/debs/ferry_1.0.0_amd64.deb
check started-on-install waitfor 180 active
say "measured install-to-ready=$((SECONDS - t0))s"
check enabled systemctl is-enabled --quiet ferry.service
check type-notify test "$(prop Type)" = notify
check healthz waitfor 30 healthz
pid=$(prop MainPID)
check runs-as-ferry test "$(stat -c %U /proc/"$pid")" = ferry
check no-devices test -z "$(prop DeviceAllow)"
check logs-in-journal bash -c 'journalctl -q -o cat -u ferry.service | grep -q "may open no bus devices"'

# Buses configured: the unit may open those nodes and no other.
cat >>/etc/ferry/ferry.yaml <<'EOF'
buses:
  - {name: line-1, modbus: {url: "rtu:///dev/ttyS1", baud: 9600, timeout: 200ms}}
devices:
  - name: meter-1
    type: meter
    source:
      bus: line-1
      unit: 1
      poll: 1s
      timeseries:
        - {key: energy, register: input, address: 0, type: uint16}
EOF
check restart systemctl restart ferry.service
check active-after-restart waitfor 120 active
pid=$(prop MainPID)
check device-allow test "$(prop DeviceAllow)" = "/dev/ttyS1 rw"
if waitfor 60 polled; then
	say "ok opens-configured-port"
else
	say "FAIL opens-configured-port: $(get /metrics | grep '^ferry_adapter_poll' | tr '\n' ' ') $(journal | tail -5 | tr '\n' ' ')"
fi
check cgroup-allows-ttyS1 in_cgroup /dev/ttyS1
if out=$(in_cgroup /dev/ttyS2 2>&1); then
	say "FAIL cgroup-denies-ttyS2: opened"
elif grep -q "Operation not permitted" <<<"$out"; then
	say "ok cgroup-denies-ttyS2"
else
	say "FAIL cgroup-denies-ttyS2: $out"
fi
check journal-device-line bash -c 'journalctl -q -o cat -u ferry.service | grep -q "may open /dev/ttyS1 rw"'
say "measured security=$(systemd-analyze security ferry.service 2>/dev/null | tail -1 | sed 's/.*exposure level of //; s/ *$//')"

# The watchdog: a frozen daemon stops pinging, and systemd restarts it.
check watchdog-sec test "$(prop WatchdogUSec)" = 30s
restarts=$(prop NRestarts)
kill -STOP "$pid"
t0=$SECONDS
check watchdog-restart waitfor 120 bash -c "[ \"\$(systemctl show -P NRestarts ferry.service)\" -gt $restarts ] && [ \"\$(systemctl show -P ActiveState ferry.service)\" = active ]"
say "measured frozen-to-restarted=$((SECONDS - t0))s"
check watchdog-journal bash -c 'journalctl -q -o cat -u ferry.service | grep -q "Watchdog timeout"'

# Restart=on-failure after a SIGKILL.
pid=$(prop MainPID)
restarts=$(prop NRestarts)
kill -KILL "$pid"
check restart-on-failure waitfor 60 bash -c "[ \"\$(systemctl show -P NRestarts ferry.service)\" -gt $restarts ] && [ \"\$(systemctl show -P ActiveState ferry.service)\" = active ]"

# Upgrade on a running system: the new version runs, the edit stays.
pid=$(prop MainPID)
check upgrade dpkg -i /root/debs/ferry_1.1.0_amd64.deb
check active-after-upgrade waitfor 120 active
check restarted-by-upgrade test "$(prop MainPID)" != "$pid"
check new-version bash -c '/usr/bin/ferry --version | grep -qx "ferry 1.1.0"'
check conffile-kept grep -q 'rtu:///dev/ttyS1' /etc/ferry/ferry.yaml

# The image's boot-partition settings (configs/image/rootfs), applied by its
# unit on this running systemd: files as a laptop leaves them (CRLF, a BOM).
mkdir -p /boot/firmware
printf 'pi-test-7\r\n' >/boot/firmware/hostname
printf 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1 a@laptop\r\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey2 b@laptop\r\n' >/boot/firmware/authorized_keys
printf 'network={\r\n  ssid="site-wifi"\r\n  psk="secret-pass"\r\n}\r\n' >/boot/firmware/wifi.conf
{ printf '\xef\xbb\xbf'; sed 's/$/\r/' /etc/ferry/ferry.yaml; printf 'node_id: vm-site\r\n'; } >/boot/firmware/ferry.yaml
check boot-config-runs systemctl start ferry-boot-config.service
check boot-hostname bash -c '[ "$(cat /etc/hostname)" = pi-test-7 ] && [ "$(hostname)" = pi-test-7 ]'
check boot-ssh-keys bash -c '[ "$(stat -c "%U %a" /home/ferry-admin/.ssh/authorized_keys)" = "ferry-admin 600" ] &&
	[ "$(grep -c "^ssh-ed25519" /home/ferry-admin/.ssh/authorized_keys)" = 2 ] && ! grep -q $'"'"'\r'"'"' /home/ferry-admin/.ssh/authorized_keys &&
	id -nG ferry-admin | grep -qw sudo'
check boot-wifi bash -c '[ "$(stat -c %a /etc/wpa_supplicant/wpa_supplicant-wlan0.conf)" = 600 ] &&
	grep -qx "  ssid=\"site-wifi\"" /etc/wpa_supplicant/wpa_supplicant-wlan0.conf &&
	systemctl is-enabled --quiet wpa_supplicant@wlan0.service'
check boot-ferry-yaml bash -c 'grep -qx "node_id: vm-site" /etc/ferry/ferry.yaml && ! grep -q $'"'"'\r'"'"' /etc/ferry/ferry.yaml'
cp /etc/ferry/ferry.yaml /root/good.yaml
printf 'mqtt: {listen: 5}\n' >/boot/firmware/ferry.yaml
check boot-bad-yaml-refused systemctl restart ferry-boot-config.service
check boot-bad-yaml-kept cmp -s /etc/ferry/ferry.yaml /root/good.yaml
check boot-bad-yaml-said bash -c 'journalctl -q -o cat -u ferry-boot-config.service | grep -q "NOT used" &&
	journalctl -q -o cat -u ferry-boot-config.service | grep -q "mqtt.listen"'

# A clean stop: the log closed, the unit inactive, not failed.
t0=$SECONDS
check stop systemctl stop ferry.service
say "measured stop=$((SECONDS - t0))s"
check stopped-inactive test "$(prop ActiveState)" = inactive
check stopped-cleanly bash -c 'journalctl -q -o cat -u ferry.service | grep -q "ferry: stopped cleanly"'

# Remove stops a running service and keeps the data; purge removes it.
systemctl start ferry.service
waitfor 120 active
pid=$(prop MainPID)
check remove dpkg -r ferry
check remove-stopped waitfor 30 test ! -e /proc/"$pid"
check remove-keeps-data test -d /var/lib/ferry/log
check purge dpkg -P ferry
check purge-removes-data test ! -e /var/lib/ferry

say done
systemctl --no-block poweroff
