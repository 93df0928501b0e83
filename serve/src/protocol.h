#pragma once
// The Open Inference Protocol (KServe v2) message codecs, protocol-neutral (HTTP and gRPC use
// them): request decoding, response encoding, and the typed number codecs both share.
#include "protocol/request.h"   // IWYU pragma: export
#include "protocol/response.h"  // IWYU pragma: export
