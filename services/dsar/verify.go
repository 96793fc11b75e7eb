package dsar

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/big"
	"sync"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/store"
)

// Code is a one-time code on its way to a subject.
type Code struct {
	TenantID string
	DsarID   string
	// Method is EMAIL_CODE or SMS_CODE.
	Method commonv1.VerificationMethod
	// Identifiers are the request's identifiers; the channel picks the
	// address to send to.
	Identifiers []*commonv1.Identifier
	// Value is the code itself. It exists only here and in the message to
	// the subject: the service keeps a salted hash.
	Value string
}

// Channel delivers one-time codes to subjects: an e-mail or SMS gateway.
type Channel interface {
	Send(ctx context.Context, code Code) error
}

// DevChannel is a channel for development and tests only: it sends
// nothing, logs that a code was issued (with the request id, never the
// code's address), and hands the code to whoever asks for it. Never
// configure it where subjects are real: anyone with access to the process
// can read every code.
type DevChannel struct {
	Logger *slog.Logger
	mu     sync.Mutex
	codes  map[string]string
}

// Send implements Channel.
func (c *DevChannel) Send(_ context.Context, code Code) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.codes == nil {
		c.codes = map[string]string{}
	}
	c.codes[code.DsarID] = code.Value
	if c.Logger != nil {
		c.Logger.Warn("dsar: development channel issued a one-time code", "tenant", code.TenantID, "request", code.DsarID, "code", code.Value)
	}
	return nil
}

// Last returns the last code issued for a request.
func (c *DevChannel) Last(dsarID string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.codes[dsarID]
}

// newCode draws a six-digit code.
func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

func codeHash(salt []byte, code string) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(code))
	return m.Sum(nil)
}

// identifiers opens a request's sealed identifiers and corrections.
func (s *Service) identifiersTx(tx *bolt.Tx, id string, sec *secrets) (*dsarv1.GetIdentifiersResponse, error) {
	if sec.Key == nil {
		return nil, apierror.FailedPrecondition(apierror.ReasonKeyDestroyed, "the request is closed and its identifiers are destroyed")
	}
	key, ok := s.keys.Key(*sec.Key)
	if !ok {
		return nil, apierror.FailedPrecondition(apierror.ReasonKeyDestroyed, "the request's key is destroyed")
	}
	plain, err := open(key, store.BucketTx(tx, bucketSealed).Get([]byte(id)), aad(id, "identifiers"))
	if err != nil {
		return nil, fmt.Errorf("dsar: open identifiers of %s: %w", id, err)
	}
	out := &dsarv1.GetIdentifiersResponse{}
	return out, proto.Unmarshal(plain, out)
}

// StartVerification implements DsarService. The code is drawn before the
// write and sent after it commits, so a code that was never recorded is
// never sent; a send that fails leaves a code nobody knows, and the caller
// asks again.
func (s *Service) StartVerification(ctx context.Context, req *dsarv1.StartVerificationRequest) (*dsarv1.StartVerificationResponse, error) {
	if s.opts.Channel == nil {
		return nil, apierror.FailedPrecondition(apierror.ReasonNoVerificationChannel, "no channel to send one-time codes is configured; attest the subject's identity instead")
	}
	code, err := newCode()
	if err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	var send Code
	resp, err := mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.StartVerificationResponse, error) {
		r, err := s.loadTx(tx, req.TenantId, req.DsarId)
		if err != nil {
			return nil, err
		}
		if err := s.codeAllowed(r.Verification); err != nil {
			return nil, err
		}
		if err := s.enterVerifyingTx(ctx, tx, r); err != nil {
			return nil, err
		}
		send, err = s.issueCodeTx(tx, r, code, salt)
		if err != nil {
			return nil, err
		}
		v := r.Verification
		return &dsarv1.StartVerificationResponse{Method: v.Method, ExpiresAt: v.CodeExpiresAt, Attempts: int32(s.opts.CodeAttempts)}, nil
	})
	if err != nil || req.GetRequestId() == "" || send.Value == "" {
		// A replay sends nothing: its code went out the first time.
		return resp, err
	}
	if err := s.opts.Channel.Send(ctx, send); err != nil {
		s.Logger.Error("dsar: sending a one-time code failed", "request", send.DsarID, "error", err)
		return nil, apierror.Unavailable(apierror.ReasonCodeNotSent, "the code could not be sent; ask for a new one", 0)
	}
	return resp, nil
}

// codeAllowed refuses another code for a request whose tenant does not
// verify by code, or that was sent as many codes as the service allows.
func (s *Service) codeAllowed(v *dsarv1.Verification) error {
	switch {
	case v.Method != commonv1.VerificationMethod_VERIFICATION_METHOD_EMAIL_CODE && v.Method != commonv1.VerificationMethod_VERIFICATION_METHOD_SMS_CODE:
		return apierror.FailedPrecondition(apierror.ReasonNoVerificationChannel, fmt.Sprintf("the tenant verifies identity by %s, not by code", v.Method))
	case int(v.CodesSent) >= s.opts.MaxCodes:
		return apierror.FailedPrecondition(apierror.ReasonCodeSpent, fmt.Sprintf("%d codes were sent already", v.CodesSent))
	}
	return nil
}

// enterVerifyingTx moves a received request to VERIFYING_IDENTITY, as its
// first code is sent; a request already there stays, any other state
// refuses.
func (s *Service) enterVerifyingTx(ctx context.Context, tx *bolt.Tx, r *dsarv1.Request) error {
	switch r.State {
	case dsarv1.RequestState_REQUEST_STATE_RECEIVED:
		return s.transitionTx(tx, r, dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY, actorOf(ctx), "one-time code sent")
	case dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY:
		return nil
	default:
		return illegal(r.State, dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY)
	}
}

// issueCodeTx records code, salted, as r's one code in force with a fresh
// count of attempts, and returns what to send to the subject's identifiers
// once tx commits.
func (s *Service) issueCodeTx(tx *bolt.Tx, r *dsarv1.Request, code string, salt []byte) (Code, error) {
	sec, err := secretsTx(tx, r.DsarId)
	if err != nil {
		return Code{}, err
	}
	ids, err := s.identifiersTx(tx, r.DsarId, sec)
	if err != nil {
		return Code{}, err
	}
	v := r.Verification
	expires := s.Clock.Now().Add(s.opts.CodeTTL)
	sec.CodeHash, sec.CodeSalt, sec.CodeExpires, sec.Attempts = codeHash(salt, code), salt, expires, s.opts.CodeAttempts
	v.CodesSent++
	v.AttemptsLeft, v.CodeExpiresAt = int32(s.opts.CodeAttempts), timestamppb.New(expires)
	if err := putSecretsTx(tx, r.DsarId, sec); err != nil {
		return Code{}, err
	}
	if err := s.putRequestTx(tx, r); err != nil {
		return Code{}, err
	}
	return Code{TenantID: r.TenantId, DsarID: r.DsarId, Method: v.Method, Identifiers: ids.Identifiers, Value: code}, nil
}

// VerifyIdentity implements DsarService. A wrong code is an answer, not an
// error: the attempt is counted and committed. The last wrong attempt of
// the last code rejects the request.
func (s *Service) VerifyIdentity(ctx context.Context, req *dsarv1.VerifyIdentityRequest) (*dsarv1.VerifyIdentityResponse, error) {
	// A wrong attempt may reject the request, and a refusal names the
	// tenant's supervisory authority (Art. 12(4)): read before the write.
	settings, err := s.tenantSettings(ctx, req.TenantId)
	if err != nil {
		return nil, err
	}
	resp, err := mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.VerifyIdentityResponse, error) {
		r, err := s.loadTx(tx, req.TenantId, req.DsarId)
		if err != nil {
			return nil, err
		}
		if r.State != dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY {
			return nil, illegal(r.State, dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS)
		}
		sec, err := secretsTx(tx, r.DsarId)
		if err != nil {
			return nil, err
		}
		now := s.Clock.Now()
		if sec.Attempts <= 0 || !now.Before(sec.CodeExpires) {
			return nil, apierror.FailedPrecondition(apierror.ReasonCodeSpent, "the code expired or its attempts are spent; ask for a new one")
		}
		v := r.Verification
		if !hmac.Equal(codeHash(sec.CodeSalt, req.Code), sec.CodeHash) {
			sec.Attempts--
			v.AttemptsLeft = int32(sec.Attempts)
			if sec.Attempts == 0 {
				sec.CodeHash, sec.CodeSalt = nil, nil
				if int(v.CodesSent) >= s.opts.MaxCodes {
					r.Rejection = &dsarv1.Rejection{Reason: dsarv1.RejectionReason_REJECTION_REASON_IDENTITY_NOT_VERIFIED,
						Detail: "every one-time code sent was entered wrongly too often (Art. 12(6))", Remedies: remediesOf(settings)}
					if err := putSecretsTx(tx, r.DsarId, sec); err != nil {
						return nil, err
					}
					if err := s.closeTx(tx, r, dsarv1.RequestState_REQUEST_STATE_REJECTED, serviceActor, "identity could not be verified"); err != nil {
						return nil, err
					}
					return &dsarv1.VerifyIdentityResponse{Request: s.viewAt(r, now)}, nil
				}
			}
			if err := putSecretsTx(tx, r.DsarId, sec); err != nil {
				return nil, err
			}
			if err := s.putRequestTx(tx, r); err != nil {
				return nil, err
			}
			return &dsarv1.VerifyIdentityResponse{AttemptsLeft: v.AttemptsLeft, Request: s.viewAt(r, now)}, nil
		}
		sec.CodeHash, sec.CodeSalt, sec.Attempts = nil, nil, 0
		v.AttemptsLeft, v.CodeExpiresAt = 0, nil
		if err := putSecretsTx(tx, r.DsarId, sec); err != nil {
			return nil, err
		}
		if err := s.verifiedTx(tx, r, actorOf(ctx), "identity verified by one-time code"); err != nil {
			return nil, err
		}
		return &dsarv1.VerifyIdentityResponse{Verified: true, Request: s.viewAt(r, now)}, nil
	})
	if err == nil && resp.Verified {
		s.fanoutNow(ctx, req.TenantId, req.DsarId)
		resp.Request = s.reload(resp.Request)
	}
	return resp, err
}

// AttestIdentity implements DsarService. The attesting caller's identity
// is recorded; who may attest is the authorization policy's decision.
func (s *Service) AttestIdentity(ctx context.Context, req *dsarv1.AttestIdentityRequest) (*dsarv1.AttestIdentityResponse, error) {
	// The fan-out commits with the verification when it could be worked
	// out beforehand (planAhead); otherwise fanoutNow does it after.
	ahead := s.planAhead(ctx, req.TenantId, req.DsarId)
	resp, err := mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.AttestIdentityResponse, error) {
		r, err := s.loadTx(tx, req.TenantId, req.DsarId)
		if err != nil {
			return nil, err
		}
		if isFinal(r.State) || r.State == dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
			return nil, illegal(r.State, dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS)
		}
		r.Verification.Method = req.Method
		if err := s.verifiedTx(tx, r, actorOf(ctx), "identity attested ("+req.Method.String()+", evidence "+req.EvidenceReference+")"); err != nil {
			return nil, err
		}
		resp := &dsarv1.AttestIdentityResponse{Request: s.viewAt(r, s.Clock.Now())}
		if ahead != nil {
			if err := s.commitPlanTx(ctx, tx, req.TenantId, req.DsarId, ahead); err != nil {
				return nil, err
			}
		}
		return resp, nil
	})
	if err == nil {
		s.fanoutNow(ctx, req.TenantId, req.DsarId)
		resp.Request = s.reload(resp.Request)
	}
	return resp, err
}

// verifiedTx records the verification and moves the request to
// IN_PROGRESS, marking it for fan-out. The fan-out itself needs calls to
// the registry, retention or consent service, which must not hold the
// store's writer: they run before this write (planAhead, whose plan
// AttestIdentity commits in the same transaction) or after it commits
// (fanoutNow), and the sweep retries a fan-out until it succeeds.
func (s *Service) verifiedTx(tx *bolt.Tx, r *dsarv1.Request, actor, note string) error {
	now := s.Clock.Now()
	r.Verification.Verified, r.Verification.VerifiedAt, r.Verification.VerifiedBy = true, timestamppb.New(now), actor
	if err := s.transitionTx(tx, r, dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS, actor, note); err != nil {
		return err
	}
	computeDeadlines(r.Deadline, now)
	if err := store.BucketTx(tx, bucketPending).Put([]byte(r.DsarId), []byte(r.TenantId)); err != nil {
		return err
	}
	return s.putRequestTx(tx, r)
}

// reload returns the request as stored now, or r when it cannot be read.
func (s *Service) reload(r *dsarv1.Request) *dsarv1.Request {
	got, err := s.GetRequest(context.Background(), &dsarv1.GetRequestRequest{TenantId: r.TenantId, DsarId: r.DsarId})
	if err != nil {
		return r
	}
	return got.Request
}
