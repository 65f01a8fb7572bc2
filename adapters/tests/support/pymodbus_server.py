"""A plain pymodbus TCP server on 127.0.0.1 for mycopod's Modbus interop test.

Usage: python3 pymodbus_server.py PORT

Holding registers 0..199 and input registers 0..199 start with known values (see below);
coils 0..63 and discrete inputs 0..63 start off. Everything is writable, as pymodbus allows.
It serves until killed. It must not do anything but serve on loopback.
"""

import asyncio
import logging
import sys

import pymodbus
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncTcpServer

try:  # pymodbus >= 3.10
    from pymodbus.datastore import ModbusDeviceContext as DeviceContext
except ImportError:  # pymodbus < 3.10
    from pymodbus.datastore import ModbusSlaveContext as DeviceContext


def holding():
    values = [0] * 200
    values[0:2] = [0x42F6, 0xE666]  # f32 123.45, big endian
    values[2:4] = [0xE666, 0x42F6]  # f32 123.45, word swapped
    values[10] = 0x1234  # u16
    values[11] = 0xFFFE  # i16 -2
    values[20:24] = [0x0123, 0x4567, 0x89AB, 0xCDEF]  # u64
    values[30:33] = [0x4D59, 0x434F, 0x0000]  # "MYCO"
    return values


def inputs():
    values = [0] * 200
    values[5] = 652  # i16 raw, 65.2 with scale 0.1
    return values


async def main(port):
    # A block starting at address 1 lines protocol address 0 up with the first value in the
    # pymodbus versions that add one to every request address; the test checks the result.
    device = DeviceContext(
        di=ModbusSequentialDataBlock(1, [False] * 64),
        co=ModbusSequentialDataBlock(1, [False] * 64),
        hr=ModbusSequentialDataBlock(1, holding()),
        ir=ModbusSequentialDataBlock(1, inputs()),
    )
    context = ModbusServerContext(device, single=True)
    print(f"pymodbus {pymodbus.__version__} serving on 127.0.0.1:{port}", flush=True)
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(int(sys.argv[1])))
