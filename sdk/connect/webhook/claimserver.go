package webhook

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// ClaimHandler serves the claim check over HTTPS for webhook receivers:
// GET /v1/claims/<tenant>/<system>/<event id>/<request id> with
// "Authorization: Bearer <letheclaimtoken>" answers the subject's
// identifiers as the DSAR service gives them to that system
// (DsarService.GetIdentifiers, as protojson): only while the system's
// task is open, only the forms the system holds. key is the runner's
// claim key (Config.ClaimKey); dsar reaches the DSAR service; now is the
// clock (time.Now when nil).
func ClaimHandler(key []byte, dsar grpc.ClientConnInterface, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	client := dsarv1.NewDsarServiceClient(dsar)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/claims/"), "/")
		if !strings.HasPrefix(r.URL.Path, "/v1/claims/") || len(parts) != 4 || !contract.ValidToken(parts[0]) || !contract.ValidToken(parts[1]) ||
			parts[2] == "" || parts[3] == "" {
			http.Error(w, "want /v1/claims/<tenant>/<system>/<event id>/<request id>", http.StatusNotFound)
			return
		}
		tenant, system, eventID, dsarID := parts[0], parts[1], parts[2], parts[3]
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "the claim check needs Authorization: Bearer <letheclaimtoken>", http.StatusUnauthorized)
			return
		}
		if err := CheckClaimToken([][]byte{key}, token, tenant, system, eventID, dsarID, now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		resp, err := client.GetIdentifiers(r.Context(), &dsarv1.GetIdentifiersRequest{TenantId: tenant, DsarId: dsarID, SystemId: system})
		if err != nil {
			code := http.StatusBadGateway
			switch status.Code(err) {
			case codes.NotFound:
				code = http.StatusNotFound
			case codes.FailedPrecondition:
				code = http.StatusGone // the task is closed: the identifiers are no longer given
			case codes.PermissionDenied, codes.Unauthenticated:
				code = http.StatusForbidden
			}
			msg := status.Convert(err).Message()
			if errors.Is(err, r.Context().Err()) {
				msg = "cancelled"
			}
			http.Error(w, msg, code)
			return
		}
		data, err := protojson.Marshal(resp)
		if err != nil {
			http.Error(w, "encoding the identifiers failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	})
}
