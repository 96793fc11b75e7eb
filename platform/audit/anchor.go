package audit

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/platform/store"
)

// Anchor is a file's audit chain head as published outside the file: on
// the platform stream (AnchorSubject) and in the service's log. Every
// entry up to Seq is committed to by Hash, so a later copy of the file
// whose chain does not reach Seq, or holds another entry there, was cut
// back or rewritten after Time (CheckAnchorTx).
//
// Its JSON form is one object per anchor, with the keys of the service's
// log line ("file", "seq", "hash", "time"), so that log lines selected by
// their message (AnchorLogMessage) are anchors as they stand.
type Anchor struct {
	// File is the file's service record (store.FileInfo.Service):
	// "consent", "retention-journal".
	File string `json:"file"`
	// Seq is the number of entries in the chain.
	Seq uint64 `json:"seq"`
	// Hash is entry Seq's hash, in lower-case hexadecimal.
	Hash string `json:"hash"`
	// Time is when the head was read.
	Time time.Time `json:"time"`
}

// ErrNoAnchor is wrapped by the errors of DecodeAnchor and Validate for a
// record that is not an anchor.
var ErrNoAnchor = errors.New("audit: not an anchor")

// AnchorSubjectPrefix starts the NATS subject of every anchor on the platform
// stream, which captures "lethe.>". Its second token starts with an
// underscore, which no tenant id can (contract.ValidToken), so no tenant's
// subscription ever matches it.
const AnchorSubjectPrefix = "lethe._audit.head"

// AnchorSubjects is the NATS subject filter of every anchor.
const AnchorSubjects = AnchorSubjectPrefix + ".*"

// AnchorLogMessage is the message of the log line that records an anchor.
const AnchorLogMessage = "audit chain head"

// AnchorSubject returns the NATS subject the anchors of file are published on.
func AnchorSubject(file string) string { return AnchorSubjectPrefix + "." + file }

// HeadTx returns the anchor of the chain in tx's file as of at, and false
// for an empty chain, which has nothing to anchor.
func HeadTx(tx *bolt.Tx, at time.Time) (Anchor, bool, error) {
	info, err := store.ReadFileInfoTx(tx)
	if err != nil {
		return Anchor{}, false, err
	}
	seq, hash, err := hashchain.New(store.BucketAudit).HeadTx(tx)
	if err != nil || seq == 0 {
		return Anchor{}, false, err
	}
	return Anchor{File: info.Service, Seq: seq, Hash: hex.EncodeToString(hash[:]), Time: at.UTC()}, true, nil
}

// Validate reports whether a names a file, an entry and a hash; it is
// ErrNoAnchor wrapped otherwise.
func (a Anchor) Validate() error {
	switch {
	case a.File == "" || strings.ContainsAny(a.File, ".*> \t\r\n"):
		return fmt.Errorf("%w: file %q is not a store's service name", ErrNoAnchor, a.File)
	case a.Seq == 0:
		return fmt.Errorf("%w: seq must be at least 1", ErrNoAnchor)
	}
	_, err := a.hash()
	return err
}

// DecodeAnchor parses an anchor's JSON form and validates it.
func DecodeAnchor(data []byte) (Anchor, error) {
	var a Anchor
	if err := json.Unmarshal(data, &a); err != nil {
		return a, fmt.Errorf("%w: %v", ErrNoAnchor, err)
	}
	return a, a.Validate()
}

// MsgID is the anchor's de-duplication id on the stream: a publish retried
// after a lost acknowledgement is stored once, while the same head read
// again later, a new anchor, is stored again.
func (a Anchor) MsgID() string {
	return fmt.Sprintf("audit-head:%s:%d:%s:%d", a.File, a.Seq, a.Hash, a.Time.UnixNano())
}
