from echo.adapters.transport.pb.echo.v1 import common_pb2 as _common_pb2
from echo.adapters.transport.pb.echo.v1 import trade_pb2 as _trade_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegistrationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGISTRATION_STATUS_UNSPECIFIED: _ClassVar[RegistrationStatus]
    REGISTRATION_STATUS_ACCEPTED: _ClassVar[RegistrationStatus]
    REGISTRATION_STATUS_WARNING: _ClassVar[RegistrationStatus]
    REGISTRATION_STATUS_REJECTED: _ClassVar[RegistrationStatus]

class AckStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STAGE_UNSPECIFIED: _ClassVar[AckStage]
    ACK_STAGE_CORE_ACCEPTED: _ClassVar[AckStage]
    ACK_STAGE_AGENT_BUFFERED: _ClassVar[AckStage]
    ACK_STAGE_PIPE_DELIVERED: _ClassVar[AckStage]
    ACK_STAGE_EA_CONFIRMED: _ClassVar[AckStage]

class AckResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_RESULT_UNSPECIFIED: _ClassVar[AckResult]
    ACK_RESULT_PENDING: _ClassVar[AckResult]
    ACK_RESULT_OK: _ClassVar[AckResult]
    ACK_RESULT_FAILED: _ClassVar[AckResult]
REGISTRATION_STATUS_UNSPECIFIED: RegistrationStatus
REGISTRATION_STATUS_ACCEPTED: RegistrationStatus
REGISTRATION_STATUS_WARNING: RegistrationStatus
REGISTRATION_STATUS_REJECTED: RegistrationStatus
ACK_STAGE_UNSPECIFIED: AckStage
ACK_STAGE_CORE_ACCEPTED: AckStage
ACK_STAGE_AGENT_BUFFERED: AckStage
ACK_STAGE_PIPE_DELIVERED: AckStage
ACK_STAGE_EA_CONFIRMED: AckStage
ACK_RESULT_UNSPECIFIED: AckResult
ACK_RESULT_PENDING: AckResult
ACK_RESULT_OK: AckResult
ACK_RESULT_FAILED: AckResult

class PingRequest(_message.Message):
    __slots__ = ("agent_id", "sent_at_ms")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    sent_at_ms: int
    def __init__(self, agent_id: _Optional[str] = ..., sent_at_ms: _Optional[int] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("core_version", "protocol_version", "sent_at_ms", "answered_at_ms", "min_ea_protocol_version", "max_ea_protocol_version")
    CORE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_EA_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_EA_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    core_version: str
    protocol_version: int
    sent_at_ms: int
    answered_at_ms: int
    min_ea_protocol_version: int
    max_ea_protocol_version: int
    def __init__(self, core_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., sent_at_ms: _Optional[int] = ..., answered_at_ms: _Optional[int] = ..., min_ea_protocol_version: _Optional[int] = ..., max_ea_protocol_version: _Optional[int] = ...) -> None: ...

class AgentHello(_message.Message):
    __slots__ = ("agent_id", "protocol_version", "supports_lossless_delivery", "token", "agent_version", "accounts")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_LOSSLESS_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    protocol_version: int
    supports_lossless_delivery: bool
    token: str
    agent_version: str
    accounts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., protocol_version: _Optional[int] = ..., supports_lossless_delivery: _Optional[bool] = ..., token: _Optional[str] = ..., agent_version: _Optional[str] = ..., accounts: _Optional[_Iterable[str]] = ...) -> None: ...

class CoreHello(_message.Message):
    __slots__ = ("protocol_version", "compat_mode", "core_version", "delivery")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPAT_MODE_FIELD_NUMBER: _ClassVar[int]
    CORE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    compat_mode: bool
    core_version: str
    delivery: DeliveryConfig
    def __init__(self, protocol_version: _Optional[int] = ..., compat_mode: _Optional[bool] = ..., core_version: _Optional[str] = ..., delivery: _Optional[_Union[DeliveryConfig, _Mapping]] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("features", "metrics")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, features: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Iterable[str]] = ...) -> None: ...

class HandshakeMetadata(_message.Message):
    __slots__ = ("protocol_version", "client_semver", "client_id", "broker", "terminal_build", "capabilities")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SEMVER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_BUILD_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    client_semver: str
    client_id: str
    broker: str
    terminal_build: int
    capabilities: Capabilities
    def __init__(self, protocol_version: _Optional[int] = ..., client_semver: _Optional[str] = ..., client_id: _Optional[str] = ..., broker: _Optional[str] = ..., terminal_build: _Optional[int] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ...) -> None: ...

class AccountSymbolsReport(_message.Message):
    __slots__ = ("account_id", "role", "symbols", "metadata", "symbol_mappings", "reported_at_ms")
    class SymbolMappingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_MAPPINGS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    role: _common_pb2.Role
    symbols: _containers.RepeatedCompositeFieldContainer[_common_pb2.SymbolSpec]
    metadata: HandshakeMetadata
    symbol_mappings: _containers.ScalarMap[str, str]
    reported_at_ms: int
    def __init__(self, account_id: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ..., symbols: _Optional[_Iterable[_Union[_common_pb2.SymbolSpec, _Mapping]]] = ..., metadata: _Optional[_Union[HandshakeMetadata, _Mapping]] = ..., symbol_mappings: _Optional[_Mapping[str, str]] = ..., reported_at_ms: _Optional[int] = ...) -> None: ...

class RegistrationIssue(_message.Message):
    __slots__ = ("code", "message", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SymbolRegistrationEntry(_message.Message):
    __slots__ = ("canonical_symbol", "broker_symbol", "status", "warnings", "errors", "spec_age_ms", "evaluated_at_ms")
    CANONICAL_SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BROKER_SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SPEC_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    canonical_symbol: str
    broker_symbol: str
    status: RegistrationStatus
    warnings: _containers.RepeatedCompositeFieldContainer[RegistrationIssue]
    errors: _containers.RepeatedCompositeFieldContainer[RegistrationIssue]
    spec_age_ms: int
    evaluated_at_ms: int
    def __init__(self, canonical_symbol: _Optional[str] = ..., broker_symbol: _Optional[str] = ..., status: _Optional[_Union[RegistrationStatus, str]] = ..., warnings: _Optional[_Iterable[_Union[RegistrationIssue, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[RegistrationIssue, _Mapping]]] = ..., spec_age_ms: _Optional[int] = ..., evaluated_at_ms: _Optional[int] = ...) -> None: ...

class SymbolRegistrationResult(_message.Message):
    __slots__ = ("account_id", "pipe_role", "protocol_version", "agent_id", "core_version", "status", "errors", "warnings", "symbols", "evaluated_at_ms", "evaluation_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PIPE_ROLE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CORE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    pipe_role: _common_pb2.Role
    protocol_version: int
    agent_id: str
    core_version: str
    status: RegistrationStatus
    errors: _containers.RepeatedCompositeFieldContainer[RegistrationIssue]
    warnings: _containers.RepeatedCompositeFieldContainer[RegistrationIssue]
    symbols: _containers.RepeatedCompositeFieldContainer[SymbolRegistrationEntry]
    evaluated_at_ms: int
    evaluation_id: str
    def __init__(self, account_id: _Optional[str] = ..., pipe_role: _Optional[_Union[_common_pb2.Role, str]] = ..., protocol_version: _Optional[int] = ..., agent_id: _Optional[str] = ..., core_version: _Optional[str] = ..., status: _Optional[_Union[RegistrationStatus, str]] = ..., errors: _Optional[_Iterable[_Union[RegistrationIssue, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[RegistrationIssue, _Mapping]]] = ..., symbols: _Optional[_Iterable[_Union[SymbolRegistrationEntry, _Mapping]]] = ..., evaluated_at_ms: _Optional[int] = ..., evaluation_id: _Optional[str] = ...) -> None: ...

class DeliveryConfig(_message.Message):
    __slots__ = ("ack_timeout_ms", "retry_backoff_ms", "max_retries", "heartbeat_interval_ms")
    ACK_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ack_timeout_ms: int
    retry_backoff_ms: int
    max_retries: int
    heartbeat_interval_ms: int
    def __init__(self, ack_timeout_ms: _Optional[int] = ..., retry_backoff_ms: _Optional[int] = ..., max_retries: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class DeliveryHeartbeat(_message.Message):
    __slots__ = ("config", "sent_at_ms")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    config: DeliveryConfig
    sent_at_ms: int
    def __init__(self, config: _Optional[_Union[DeliveryConfig, _Mapping]] = ..., sent_at_ms: _Optional[int] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("account_id", "command_id", "stage", "result", "reason")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    command_id: str
    stage: AckStage
    result: AckResult
    reason: str
    def __init__(self, account_id: _Optional[str] = ..., command_id: _Optional[str] = ..., stage: _Optional[_Union[AckStage, str]] = ..., result: _Optional[_Union[AckResult, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class DropCommand(_message.Message):
    __slots__ = ("account_id", "command_id", "reason")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    command_id: str
    reason: str
    def __init__(self, account_id: _Optional[str] = ..., command_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AccountOffline(_message.Message):
    __slots__ = ("account_id", "at_ms")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    at_ms: int
    def __init__(self, account_id: _Optional[str] = ..., at_ms: _Optional[int] = ...) -> None: ...

class FromAccount(_message.Message):
    __slots__ = ("account_id", "received_ms", "traceparent", "trade_intent", "trade_close", "trade_modify", "execution_result", "close_result", "modify_result", "quotes", "state_snapshot")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_MS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRADE_INTENT_FIELD_NUMBER: _ClassVar[int]
    TRADE_CLOSE_FIELD_NUMBER: _ClassVar[int]
    TRADE_MODIFY_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_RESULT_FIELD_NUMBER: _ClassVar[int]
    CLOSE_RESULT_FIELD_NUMBER: _ClassVar[int]
    MODIFY_RESULT_FIELD_NUMBER: _ClassVar[int]
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    STATE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    received_ms: int
    traceparent: str
    trade_intent: _trade_pb2.TradeIntent
    trade_close: _trade_pb2.TradeClose
    trade_modify: _trade_pb2.TradeModify
    execution_result: _trade_pb2.ExecutionResult
    close_result: _trade_pb2.CloseResult
    modify_result: _trade_pb2.ModifyResult
    quotes: _trade_pb2.Quotes
    state_snapshot: _trade_pb2.StateSnapshot
    def __init__(self, account_id: _Optional[str] = ..., received_ms: _Optional[int] = ..., traceparent: _Optional[str] = ..., trade_intent: _Optional[_Union[_trade_pb2.TradeIntent, _Mapping]] = ..., trade_close: _Optional[_Union[_trade_pb2.TradeClose, _Mapping]] = ..., trade_modify: _Optional[_Union[_trade_pb2.TradeModify, _Mapping]] = ..., execution_result: _Optional[_Union[_trade_pb2.ExecutionResult, _Mapping]] = ..., close_result: _Optional[_Union[_trade_pb2.CloseResult, _Mapping]] = ..., modify_result: _Optional[_Union[_trade_pb2.ModifyResult, _Mapping]] = ..., quotes: _Optional[_Union[_trade_pb2.Quotes, _Mapping]] = ..., state_snapshot: _Optional[_Union[_trade_pb2.StateSnapshot, _Mapping]] = ...) -> None: ...

class ToAccount(_message.Message):
    __slots__ = ("account_id", "traceparent", "execute_order", "close_order", "modify_order", "trade_intent_ack", "symbol_registration_result", "delivery_config")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_ORDER_FIELD_NUMBER: _ClassVar[int]
    CLOSE_ORDER_FIELD_NUMBER: _ClassVar[int]
    MODIFY_ORDER_FIELD_NUMBER: _ClassVar[int]
    TRADE_INTENT_ACK_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_REGISTRATION_RESULT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_CONFIG_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    traceparent: str
    execute_order: _trade_pb2.ExecuteOrder
    close_order: _trade_pb2.CloseOrder
    modify_order: _trade_pb2.ModifyOrder
    trade_intent_ack: _trade_pb2.TradeIntentAck
    symbol_registration_result: SymbolRegistrationResult
    delivery_config: DeliveryConfig
    def __init__(self, account_id: _Optional[str] = ..., traceparent: _Optional[str] = ..., execute_order: _Optional[_Union[_trade_pb2.ExecuteOrder, _Mapping]] = ..., close_order: _Optional[_Union[_trade_pb2.CloseOrder, _Mapping]] = ..., modify_order: _Optional[_Union[_trade_pb2.ModifyOrder, _Mapping]] = ..., trade_intent_ack: _Optional[_Union[_trade_pb2.TradeIntentAck, _Mapping]] = ..., symbol_registration_result: _Optional[_Union[SymbolRegistrationResult, _Mapping]] = ..., delivery_config: _Optional[_Union[DeliveryConfig, _Mapping]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "account_online", "account_offline", "from_account", "command_ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ONLINE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_OFFLINE_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ACK_FIELD_NUMBER: _ClassVar[int]
    hello: AgentHello
    account_online: AccountSymbolsReport
    account_offline: AccountOffline
    from_account: FromAccount
    command_ack: CommandAck
    def __init__(self, hello: _Optional[_Union[AgentHello, _Mapping]] = ..., account_online: _Optional[_Union[AccountSymbolsReport, _Mapping]] = ..., account_offline: _Optional[_Union[AccountOffline, _Mapping]] = ..., from_account: _Optional[_Union[FromAccount, _Mapping]] = ..., command_ack: _Optional[_Union[CommandAck, _Mapping]] = ...) -> None: ...

class CoreMessage(_message.Message):
    __slots__ = ("hello", "to_account", "delivery_heartbeat", "drop_command")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DROP_COMMAND_FIELD_NUMBER: _ClassVar[int]
    hello: CoreHello
    to_account: ToAccount
    delivery_heartbeat: DeliveryHeartbeat
    drop_command: DropCommand
    def __init__(self, hello: _Optional[_Union[CoreHello, _Mapping]] = ..., to_account: _Optional[_Union[ToAccount, _Mapping]] = ..., delivery_heartbeat: _Optional[_Union[DeliveryHeartbeat, _Mapping]] = ..., drop_command: _Optional[_Union[DropCommand, _Mapping]] = ...) -> None: ...
