#!/usr/bin/python3
"""A Modbus slave for Ferry's tests, on pymodbus (Debian's python3-pymodbus).

    pyslave.py tcp 127.0.0.1:5020 init.json
    pyslave.py rtu /dev/pts/5 init.json [baud]

init.json maps unit ids to their tables: {"1": {"hr": {"0": 215}, "ir": {},
"co": {"3": 1}, "di": {}}}; every table holds 200 values from address 0, so
reading past 199 answers exception 2 (illegal data address).

Commands on stdin, one per line, each answered with one line on stdout:
    dead U          unit U stops answering (its frames are ignored)
    alive U         unit U answers again
    get T U A N     prints N values of table T (hr, ir, co, di) of unit U from A
    set T U A V...  sets values from A
"""
import json
import logging
import sys
import threading

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartSerialServer, StartTcpServer
from pymodbus.transaction import ModbusRtuFramer

SIZE = 200


def unit_context(tables):
    blocks = {}
    for t in ("hr", "ir", "co", "di"):
        values = [0] * SIZE
        for addr, v in tables.get(t, {}).items():
            values[int(addr)] = int(v)
        blocks[t] = ModbusSequentialDataBlock(0, values)
    return ModbusSlaveContext(zero_mode=True, **blocks)


FC = {"hr": 3, "ir": 4, "co": 1, "di": 2}


def control(ctx, dead):
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            cmd = words[0]
            if cmd in ("get", "set"):
                t, unit, addr = words[1], int(words[2]), int(words[3])
            else:
                unit = int(words[1])
            if cmd == "dead":
                dead[unit] = ctx._slaves.pop(unit)
                print("ok", flush=True)
            elif cmd == "alive":
                ctx._slaves[unit] = dead.pop(unit)
                print("ok", flush=True)
            elif cmd == "get":
                n = int(words[4])
                store = (ctx._slaves.get(unit) or dead[unit])
                vals = store.getValues(FC[t], addr, n)
                print(" ".join(str(int(v)) for v in vals), flush=True)
            elif cmd == "set":
                store = (ctx._slaves.get(unit) or dead[unit])
                store.setValues(FC[t], addr, [int(v) for v in words[4:]])
                print("ok", flush=True)
            else:
                print("error unknown command", flush=True)
        except Exception as e:  # the test reads the answer
            print("error", e, flush=True)


def main():
    mode, where, init = sys.argv[1], sys.argv[2], sys.argv[3]
    logging.basicConfig(level=logging.CRITICAL)
    with open(init) as f:
        units = json.load(f)
    ctx = ModbusServerContext(slaves={int(u): unit_context(t) for u, t in units.items()}, single=False)
    dead = {}
    threading.Thread(target=control, args=(ctx, dead), daemon=True).start()
    print("serving", flush=True)
    if mode == "tcp":
        host, port = where.rsplit(":", 1)
        StartTcpServer(context=ctx, address=(host, int(port)), ignore_missing_slaves=True, allow_reuse_address=True)
    else:
        baud = int(sys.argv[4]) if len(sys.argv) > 4 else 9600
        StartSerialServer(context=ctx, framer=ModbusRtuFramer, port=where, baudrate=baud,
                          ignore_missing_slaves=True)


if __name__ == "__main__":
    main()
