package broker

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PullHeartbeat is how often the server confirms a waiting pull request
// of the platform's own consumers. nats.go sends a pull request again
// after two missed heartbeats, so one that is lost — sent while a
// clustered consumer's leader is still being elected, as happens when the
// services and the NATS cluster start together, or held by a node that
// restarts — holds delivery back for 10 s rather than the 30 s of
// nats.go's default (half the 30 s expiry). The SDK's subscriber uses the
// same by default.
const PullHeartbeat = 5 * time.Second

// Consume consumes from cons with the platform's pull settings
// (PullHeartbeat) and opts.
func Consume(cons jetstream.Consumer, handle jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return cons.Consume(handle, append([]jetstream.PullConsumeOpt{jetstream.PullHeartbeat(PullHeartbeat)}, opts...)...)
}
