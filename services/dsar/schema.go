package dsar

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
)

// Buckets of dsar.db.
var (
	// bucketRequests: tenant, dsar id → Request (binary protobuf); what
	// any caller may see, never identifiers.
	bucketRequests = store.Bucket("requests")
	// bucketSecrets: dsar id → secrets (JSON): the key's slot, the code
	// hash, whether the request was fanned out.
	bucketSecrets = store.Bucket("secrets")
	// bucketSealed: dsar id → identifiers and corrections sealed under the
	// request's key.
	bucketSealed = store.Bucket("sealed")
	// bucketSubmissions: dsar id, system id, sequence → a submitted record
	// sealed under the request's key.
	bucketSubmissions = store.Bucket("submissions")
	// bucketPackages: dsar id, chunk number → the package sealed under the
	// request's key.
	bucketPackages = store.Bucket("packages")
	// bucketPending: dsar id → tenant, for requests in progress whose
	// fan-out has not committed yet (a failed call to a neighbour is
	// retried by the sweep).
	bucketPending = store.Bucket("pending")
	// bucketFollowing: dsar id → tenant, for requests that wait for the
	// consent service's fan-out.
	bucketFollowing = store.Bucket("following")
	// bucketPackageExpiry: time, dsar id → nil: packages to destroy when
	// their delivery was never confirmed.
	bucketPackageExpiry = store.Bucket("package_expiry")
	// bucketReceipts holds the hash chain of receipts.
	bucketReceipts = store.Bucket("receipts")
	// bucketReceiptIndex: dsar id → the receipt's sequence on the chain.
	bucketReceiptIndex = store.Bucket("receipt_index")
)

// schema is the layout of dsar.db.
var schema = store.Schema{
	Service: "dsar",
	Version: 3,
	Buckets: []store.Bucket{
		bucketRequests, bucketSecrets, bucketSealed, bucketSubmissions, bucketPackages,
		bucketPending, bucketFollowing, bucketPackageExpiry, bucketReceipts, bucketReceiptIndex,
	},
	// Only CreateRequest, an audited mutation, adds a request; later
	// transitions rewrite it. A file holding one has audit entries.
	Audited: []store.Bucket{bucketRequests},
	// Version 2 moved the tasks to the kit's key encoding (see
	// tasks.MigrateKeysTx); open tasks stay open across it. Version 3
	// writes them in binary (tasks.BinaryTasksTx).
	Migrations: []store.Migration{{To: 2, Up: tasks.MigrateKeysTx}, {To: 3, Up: tasks.BinaryTasksTx}},
}

// secrets is what a request keeps that no response shows.
type secrets struct {
	// Key names the request's key; nil once destroyed.
	Key *slotRef `json:"key,omitempty"`
	// CodeHash is HMAC-SHA256(salt, code) of the current one-time code.
	CodeHash    []byte    `json:"code_hash,omitempty"`
	CodeSalt    []byte    `json:"code_salt,omitempty"`
	CodeExpires time.Time `json:"code_expires,omitzero"`
	Attempts    int       `json:"attempts,omitempty"`
	// Events are the directives published for the request.
	Events []string `json:"events,omitempty"`
	// Info is the Art. 15(1) information fetched at fan-out (JSON).
	Info json.RawMessage `json:"info,omitempty"`
	// Submitted counts the records each system submitted.
	Submitted map[string]int `json:"submitted,omitempty"`
	// Dropped counts records left out of a portability package for their
	// legal basis (Art. 20(1)(a)).
	Dropped int `json:"dropped,omitempty"`
	// DroppedNotProvided counts records left out because the subject did
	// not provide them (inferred, derived or third-party data, Art. 20(1)).
	DroppedNotProvided int `json:"dropped_not_provided,omitempty"`
	// DroppedUnknown counts records left out because the registry states
	// no provenance for their category.
	DroppedUnknown int `json:"dropped_unknown,omitempty"`
}

func decodeSecrets(v []byte) (*secrets, error) {
	sec := &secrets{}
	if v == nil {
		return sec, nil
	}
	return sec, json.Unmarshal(v, sec)
}

func secretsTx(tx *bolt.Tx, id string) (*secrets, error) {
	return decodeSecrets(store.BucketTx(tx, bucketSecrets).Get([]byte(id)))
}

func putSecretsTx(tx *bolt.Tx, id string, sec *secrets) error {
	b, err := json.Marshal(sec)
	if err != nil {
		return err
	}
	return store.BucketTx(tx, bucketSecrets).Put([]byte(id), b)
}

// requestTx reads a request; NotFound when the tenant has none of that id.
func requestTx(tx *bolt.Tx, tenant, id string) (*dsarv1.Request, error) {
	v := store.BucketTx(tx, bucketRequests).Get(store.Key(tenant, id))
	if v == nil {
		return nil, apierror.NotFound("request", id)
	}
	r := &dsarv1.Request{}
	return r, proto.Unmarshal(v, r)
}
