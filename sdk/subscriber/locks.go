package subscriber

import (
	"context"
	"sync"
)

// subjectLocks serialises the events about one data subject within a
// process. Two deliveries of one event (a re-send arriving while the first
// is handled) would otherwise both miss the ledger and both call the
// handler, and a restriction event could pass the ordering check while an
// older one for the same restriction is still being applied.
type subjectLocks struct {
	mu   sync.Mutex
	held map[string]*subjectLock
}

// subjectLock is held by one event and awaited by refs-1 others.
type subjectLock struct {
	token chan struct{}
	refs  int
}

// lock waits until no other event of key is being handled, or ctx ends.
func (l *subjectLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	if l.held == nil {
		l.held = map[string]*subjectLock{}
	}
	e := l.held[key]
	if e == nil {
		e = &subjectLock{token: make(chan struct{}, 1)}
		l.held[key] = e
	}
	e.refs++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if e.refs--; e.refs == 0 {
			delete(l.held, key)
		}
	}
	select {
	case e.token <- struct{}{}:
		return func() {
			<-e.token
			release()
		}, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// subjectKey returns the lock key of ev: its tenant and subject, or its id
// when it is about no one subject.
func subjectKey(ev *Event) string {
	if ev.pb.GetSubjectId() == "" {
		return "event\x00" + ev.pb.GetId()
	}
	return "subject\x00" + ev.pb.GetTenantId() + "\x00" + ev.pb.GetSubjectId()
}
