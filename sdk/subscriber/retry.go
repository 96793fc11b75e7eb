package subscriber

import (
	"errors"
	"time"
)

// MaxRetryAfter caps the delay a handler can ask for with [RetryAfter]: a
// receiver's "come back in a week" must not park an event past the
// deadline it is counted against.
const MaxRetryAfter = time.Hour

// RetryAfter wraps err, a transient failure, with the delay after which the
// event should be delivered again, replacing the back-off for this
// delivery: what an HTTP endpoint's Retry-After asked for. The delay is
// capped at MaxRetryAfter; a delay of zero or less leaves the back-off in
// force. The delivery still counts toward MaxDeliver.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry later")
	}
	return &retryAfterError{delay: min(d, MaxRetryAfter), err: err}
}

type retryAfterError struct {
	delay time.Duration
	err   error
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// retryDelay returns the delay err asks for with RetryAfter, if any.
func retryDelay(err error) (time.Duration, bool) {
	var ra *retryAfterError
	if errors.As(err, &ra) && ra.delay > 0 {
		return ra.delay, true
	}
	return 0, false
}
