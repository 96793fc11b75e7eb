module github.com/lethe-privacy/lethe/sdk

go 1.26.0

replace github.com/lethe-privacy/lethe/gen/go => ../gen/go

require (
	github.com/lethe-privacy/lethe/gen/go v0.0.0-00010101000000-000000000000
	github.com/nats-io/nats.go v1.55.0
	google.golang.org/protobuf v1.36.12
)

require (
	buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go v1.36.12-20260825204119-511051f7f437.1 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
