#!/usr/bin/env bash
# make-certs.sh: the certificates of a Lethe deployment, for kind, minikube
# or local processes (a cluster with cert-manager issues them itself).
#
# It makes one CA and, signed by it, a key pair for each of:
#   lethe-consent, lethe-dsar, lethe-registry, lethe-retention, lethe-connect
#       DNS lethe-<svc>, lethe-<svc>.<namespace>.svc; URI SAN
#       spiffe://<trust domain>/ns/<namespace>/sa/lethe-<svc>; serverAuth
#       and clientAuth (one pair serves the service's listener and its
#       calls to NATS, the registry and its neighbours; lethe-connect's also
#       its claim check's listener)
#   nats (the three NATS nodes)
#       DNS nats, nats.<namespace>.svc, *.nats-cluster,
#       *.nats-cluster.<namespace>.svc; serverAuth and clientAuth (routes)
#   lethe-operator (the lethe CLI)
#       URI SAN spiffe://<trust domain>/ns/<namespace>/sa/lethe-operator;
#       clientAuth; the production policy's operator rule names it
#   every system given as an argument, system@tenant (an SDK subscriber's
#   client certificate for NATS)
#       CN system@tenant, URI SAN
#       spiffe://<trust domain>/tenant/<tenant>/system/<system>; clientAuth
#
# Each goes to a folder of OUT named like its Kubernetes Secret, holding
# that Secret's keys: tls.crt, tls.key, ca.crt (deploy/README.md, "Secrets
# you create"). The CA's key stays in OUT/ca and is reused by later runs,
# so a system added later is signed by the same CA; an existing key pair is
# kept unless --renew is given.
#
# Usage: deploy/certs/make-certs.sh [options] [system@tenant ...]
#   --out DIR            output folder (default ./lethe-certs)
#   --trust-domain TD    SPIFFE trust domain (default lethe.internal; the
#                        production overlay's LETHE_TRUST_DOMAIN and policy.json)
#   --namespace NS       Kubernetes namespace of Lethe (default lethe)
#   --extra-name NAME    one more DNS name or IP address in every server
#                        certificate (services and NATS); repeatable. For
#                        processes on one machine: --extra-name localhost
#                        --extra-name 127.0.0.1
#   --days N             validity of the key pairs (default 90; the CA 3650)
#   --renew              issue every key pair again (the CA stays)
#   --kubectl print|apply  print, or run, the kubectl commands that create
#                        the overlay's Secrets (lethe-<svc>-tls, nats-tls)
#                        in NS from the files; apply replaces existing ones
#
# Needs bash and openssl (1.1.1 or later).
set -euo pipefail

out=./lethe-certs
trust_domain=lethe.internal
namespace=lethe
days=90
renew=false
kubectl_mode=
extra_names=()
systems=()

usage() { sed -n '2,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "make-certs.sh: $*" >&2; exit 2; }

while (($#)); do
	case "$1" in
	--out) out=${2:?--out needs a folder}; shift 2 ;;
	--trust-domain) trust_domain=${2:?--trust-domain needs a value}; shift 2 ;;
	--namespace) namespace=${2:?--namespace needs a value}; shift 2 ;;
	--extra-name) extra_names+=("${2:?--extra-name needs a value}"); shift 2 ;;
	--days) days=${2:?--days needs a number}; shift 2 ;;
	--renew) renew=true; shift ;;
	--kubectl) kubectl_mode=${2:?--kubectl needs print or apply}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	--*) die "unknown option $1 (see --help)" ;;
	*) systems+=("$1"); shift ;;
	esac
done

# Names go into certificates and folder names: refuse what would not be a
# valid SPIFFE path segment or DNS label rather than issue a broken one.
[[ $trust_domain =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "--trust-domain $trust_domain is not a DNS-like name"
[[ $namespace =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] || die "--namespace $namespace is not a Kubernetes namespace name"
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days $days is not a positive number"
case "$kubectl_mode" in "" | print | apply) ;; *) die "--kubectl $kubectl_mode: want print or apply" ;; esac
for s in "${systems[@]}"; do
	[[ $s =~ ^[a-z0-9][a-z0-9_-]*@[a-z0-9][a-z0-9_-]*$ ]] || die "system $s: want system@tenant (lower-case ids, as in deploy/nats/auth.conf)"
done
for n in "${extra_names[@]}"; do
	[[ $n =~ ^[A-Za-z0-9*.:-]+$ ]] || die "--extra-name $n is neither a DNS name nor an IP address"
done
command -v openssl >/dev/null || die "openssl is not installed"

umask 077
mkdir -p "$out/ca"

# The CA: made once, reused afterwards.
ca_crt=$out/ca/ca.crt ca_key=$out/ca/ca.key
if [[ ! -s $ca_crt || ! -s $ca_key ]]; then
	openssl ecparam -name prime256v1 -genkey -noout -out "$ca_key" 2>/dev/null
	openssl req -x509 -new -key "$ca_key" -sha256 -days 3650 -subj "/O=Lethe/CN=Lethe CA ($trust_domain)" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" -out "$ca_crt"
	echo "made CA $ca_crt"
fi

# san_list joins DNS names, IP addresses and URIs into a subjectAltName.
san_list() {
	local sans=() n
	for n in "$@"; do
		if [[ $n == spiffe://* ]]; then
			sans+=("URI:$n")
		elif [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
			sans+=("IP:$n")
		else
			sans+=("DNS:$n")
		fi
	done
	local IFS=,
	echo "${sans[*]}"
}

# issue FOLDER CN EKU NAME... writes FOLDER/tls.crt, tls.key and ca.crt:
# a P-256 key and a certificate for the names, signed by the CA.
issue() {
	local folder=$out/$1 cn=$2 eku=$3
	shift 3
	if [[ -s $folder/tls.crt && -s $folder/tls.key && $renew == false ]]; then
		cp "$ca_crt" "$folder/ca.crt"
		echo "kept $folder"
		return
	fi
	mkdir -p "$folder"
	local ext
	ext=$(mktemp)
	cat >"$ext" <<-EXT
		basicConstraints=critical,CA:FALSE
		keyUsage=critical,digitalSignature
		extendedKeyUsage=$eku
		subjectKeyIdentifier=hash
		authorityKeyIdentifier=keyid
		subjectAltName=$(san_list "$@")
	EXT
	openssl ecparam -name prime256v1 -genkey -noout -out "$folder/tls.key.new" 2>/dev/null
	openssl req -new -key "$folder/tls.key.new" -subj "/O=Lethe/CN=$cn" -out "$folder/tls.csr" 2>/dev/null
	openssl x509 -req -in "$folder/tls.csr" -CA "$ca_crt" -CAkey "$ca_key" -CAcreateserial -days "$days" -sha256 \
		-extfile "$ext" -out "$folder/tls.crt.new" 2>/dev/null
	rm -f "$folder/tls.csr" "$ext"
	mv "$folder/tls.key.new" "$folder/tls.key"
	mv "$folder/tls.crt.new" "$folder/tls.crt"
	cp "$ca_crt" "$folder/ca.crt"
	echo "issued $folder ($cn)"
}

spiffe() { echo "spiffe://$trust_domain/$1"; }

secrets=()
for svc in consent dsar registry retention connect; do
	# The consent read replicas present consent's key pair, behind
	# lethe-consent-read.
	read_names=()
	if [[ $svc == consent ]]; then
		read_names=(lethe-consent-read "lethe-consent-read.$namespace.svc")
	fi
	issue "lethe-$svc-tls" "lethe-$svc" serverAuth,clientAuth \
		"lethe-$svc" "lethe-$svc.$namespace.svc" "${read_names[@]}" "$(spiffe "ns/$namespace/sa/lethe-$svc")" "${extra_names[@]}"
	secrets+=("lethe-$svc-tls")
done
issue nats-tls nats serverAuth,clientAuth \
	nats "nats.$namespace.svc" "*.nats-cluster" "*.nats-cluster.$namespace.svc" "$(spiffe "ns/$namespace/sa/nats")" "${extra_names[@]}"
secrets+=(nats-tls)
issue lethe-operator lethe-operator clientAuth "$(spiffe "ns/$namespace/sa/lethe-operator")"
for s in "${systems[@]}"; do
	system=${s%@*} tenant=${s#*@}
	issue "system-$system-$tenant" "$s" clientAuth "$(spiffe "tenant/$tenant/system/$system")"
done

# The overlay's Secrets, from the files just written.
if [[ -n $kubectl_mode ]]; then
	for name in "${secrets[@]}"; do
		cmd=(kubectl -n "$namespace" create secret generic "$name"
			"--from-file=tls.crt=$out/$name/tls.crt" "--from-file=tls.key=$out/$name/tls.key" "--from-file=ca.crt=$out/$name/ca.crt")
		if [[ $kubectl_mode == print ]]; then
			printf '%q ' "${cmd[@]}"
			echo
		else
			"${cmd[@]}" --dry-run=client -o yaml | kubectl apply -f -
		fi
	done
fi
