"""Names other tools rely on (DAG ids, connection ids, buckets). See shared DESIGN.md "Contracts"."""

DAG_ACCESS = "dsr_access"
DAG_PORTABILITY = "dsr_portability"
DAG_ERASURE = "dsr_erasure"
DAG_RESTRICTION = "dsr_restriction"
DAG_RECTIFICATION = "dsr_rectification"
DAG_OBJECTION = "dsr_objection"
DAG_SLA_MONITOR = "dsr_sla_monitor"
DAG_RETENTION = "retention_enforcement"

RIGHTS = ("access", "portability", "erasure", "restriction", "rectification", "objection")
#: The DAGs whose runs carry a subject's identities in their conf.
RIGHT_DAG_IDS = (DAG_ACCESS, DAG_PORTABILITY, DAG_ERASURE, DAG_RESTRICTION, DAG_RECTIFICATION, DAG_OBJECTION)

CONN_APP_DB = "fabconnect_app"
CONN_S3 = "fabconnect_s3"
CONN_LEDGER = "dsr_ledger"

PLATFORM_BUCKET = "fabconnect-platform"
EXPORTS_BUCKET = "fabconnect-dsr-exports"

# Partner channels declared in the data map.
CHANNEL_API = "api"
CHANNEL_S3_DROPBOX = "s3_dropbox"
CHANNEL_MANUAL = "manual"
CHANNELS = (CHANNEL_API, CHANNEL_S3_DROPBOX, CHANNEL_MANUAL)

# Presigned package links never live longer than this (DESIGN.md: at most 7 days).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
