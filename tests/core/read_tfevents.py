#!/usr/bin/env python3
"""An independent reader of TensorBoard event files, for oclip's tests.

It shares no code with core/tensorboard_writer: the CRC-32C is computed bit
by bit here, and the Event message is parsed by the protobuf library from a
descriptor built below with the field numbers of TensorFlow's event.proto and
summary.proto. Prints JSON: {"file_version": ..., "scalars": [[tag, value,
step, wall_time], ...]}. Exits 1 with a message on a CRC mismatch or a
truncated record.
"""
import json
import struct
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def event_class():
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="oclip_test_event.proto", package="tensorflow",
                                               syntax="proto3")

    def message(name, fields):
        m = proto.message_type.add(name=name)
        for field_name, number, field_type, label, type_name in fields:
            field = m.field.add(name=field_name, number=number, type=field_type, label=label)
            if type_name:
                field.type_name = type_name

    optional, repeated = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("Value", [("tag", 1, f.TYPE_STRING, optional, None),
                      ("simple_value", 2, f.TYPE_FLOAT, optional, None)])
    message("Summary", [("value", 1, f.TYPE_MESSAGE, repeated, ".tensorflow.Value")])
    message("Event", [("wall_time", 1, f.TYPE_DOUBLE, optional, None),
                      ("step", 2, f.TYPE_INT64, optional, None),
                      ("file_version", 3, f.TYPE_STRING, optional, None),
                      ("summary", 5, f.TYPE_MESSAGE, optional, ".tensorflow.Summary")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.Event")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def main(path):
    Event = event_class()
    data = open(path, "rb").read()
    pos, file_version, scalars = 0, None, []
    while pos < len(data):
        if len(data) - pos < 12:
            sys.exit("truncated header at %d" % pos)
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked(crc32c(header)) != length_crc:
            sys.exit("length crc mismatch at %d" % pos)
        body = data[pos + 12:pos + 12 + length]
        if len(body) != length or len(data) < pos + 16 + length:
            sys.exit("truncated record at %d" % pos)
        (data_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if masked(crc32c(body)) != data_crc:
            sys.exit("data crc mismatch at %d" % pos)
        pos += 16 + length
        event = Event()
        event.ParseFromString(body)
        if event.file_version:
            file_version = event.file_version
        for value in event.summary.value:
            scalars.append([value.tag, value.simple_value, event.step, event.wall_time])
    print(json.dumps({"file_version": file_version, "scalars": scalars}))


if __name__ == "__main__":
    main(sys.argv[1])
