from cometp2p.wire.proto.tendermint.p2p import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PexRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PexAddrs(_message.Message):
    __slots__ = ("addrs",)
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    addrs: _containers.RepeatedCompositeFieldContainer[_types_pb2.NetAddress]
    def __init__(self, addrs: _Optional[_Iterable[_Union[_types_pb2.NetAddress, _Mapping]]] = ...) -> None: ...

class PexRequestV2(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PexAddressV2(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class PexResponseV2(_message.Message):
    __slots__ = ("addresses",)
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedCompositeFieldContainer[PexAddressV2]
    def __init__(self, addresses: _Optional[_Iterable[_Union[PexAddressV2, _Mapping]]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("pex_request", "pex_addrs", "pex_request_v2", "pex_response_v2")
    PEX_REQUEST_FIELD_NUMBER: _ClassVar[int]
    PEX_ADDRS_FIELD_NUMBER: _ClassVar[int]
    PEX_REQUEST_V2_FIELD_NUMBER: _ClassVar[int]
    PEX_RESPONSE_V2_FIELD_NUMBER: _ClassVar[int]
    pex_request: PexRequest
    pex_addrs: PexAddrs
    pex_request_v2: PexRequestV2
    pex_response_v2: PexResponseV2
    def __init__(self, pex_request: _Optional[_Union[PexRequest, _Mapping]] = ..., pex_addrs: _Optional[_Union[PexAddrs, _Mapping]] = ..., pex_request_v2: _Optional[_Union[PexRequestV2, _Mapping]] = ..., pex_response_v2: _Optional[_Union[PexResponseV2, _Mapping]] = ...) -> None: ...
