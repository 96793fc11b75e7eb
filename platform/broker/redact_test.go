package broker

import "testing"

func TestRedactURLs(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://alice:s3cret@nats.example:4222", "nats://redacted@nats.example:4222"},
		{"nats://t0ken@nats.example:4222", "nats://redacted@nats.example:4222"},
		{"tls://a:b@n1:4222, tls://n2:4222", "tls://redacted@n1:4222,tls://n2:4222"},
		{"alice:s3cret@nats.example:4222", "redacted@nats.example:4222"},
		{"nats.example:4222", "nats.example:4222"},
		{"nats://a:b@[::1", "<unparsable URL>"},
	}
	for _, tt := range tests {
		if got := redactURLs(tt.in); got != tt.want {
			t.Errorf("redactURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
