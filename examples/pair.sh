#!/usr/bin/env bash
# swrm device pairing script.
#
# Exchanges a one-time provisioning token (swrm_pt_...) for a persistent
# device API key (swrm_dk_...) and stores the key in a file readable only by
# its owner (default /etc/swrm/token).
#
#   SWRM_PROV_TOKEN=swrm_pt_... SWRM_API=https://your-swrm-host sudo -E ./pair.sh
#
# Environment:
#   SWRM_PROV_TOKEN        required  one-time provisioning token (Devices -> New device)
#   SWRM_API               required  base URL of the server, e.g. http://127.0.0.1:8080
#   SWRM_TOKEN_FILE        optional  where to store the device key (default /etc/swrm/token)
#   SWRM_HARDWARE_MODEL    optional  default: /proc/device-tree/model when readable
#   SWRM_SERIAL_NUMBER     optional  default: /proc/device-tree/serial-number when readable
#   SWRM_FIRMWARE_VERSION  optional
#
# Neither the provisioning token nor the device key is ever printed, and
# neither appears on a command line (both travel through pipes and files).
# Dependencies: bash, curl; python3 is used when present (JSON encoding and
# parsing), otherwise a bash/sed fallback is used. No jq needed.

set -euo pipefail

prog=${0##*/}

die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

warn() {
    printf '%s: warning: %s\n' "$prog" "$*" >&2
}

# --- configuration ---------------------------------------------------------

[ -n "${SWRM_PROV_TOKEN:-}" ] ||
    die "SWRM_PROV_TOKEN is not set: copy the one-time provisioning token (swrm_pt_...) shown when the device was created in the console (Devices -> New device) and run: SWRM_PROV_TOKEN=swrm_pt_... SWRM_API=https://your-swrm-host $0"
[ -n "${SWRM_API:-}" ] ||
    die "SWRM_API is not set: set it to the base URL of the swrm server, e.g. SWRM_API=http://127.0.0.1:8080"

prov_token=$SWRM_PROV_TOKEN
api=${SWRM_API%/}
token_file=${SWRM_TOKEN_FILE:-/etc/swrm/token}

case $api in
    http://* | https://*) ;;
    *) die "SWRM_API must start with http:// or https:// (got '$api')" ;;
esac
case $api in
    http://localhost* | http://127.* | http://\[::1\]*) ;;
    http://*) warn "SWRM_API uses plain http: the provisioning token and the device key travel unencrypted; prefer https" ;;
    *) ;;
esac
case $prov_token in
    swrm_pt_*) ;;
    *) warn "SWRM_PROV_TOKEN does not start with swrm_pt_; is it a provisioning token?" ;;
esac

# Read a device-tree string property (NUL-terminated) if readable.
read_dt() {
    if [ -r "$1" ]; then
        tr -d '\000' <"$1" 2>/dev/null || true
    fi
}

hardware_model=${SWRM_HARDWARE_MODEL:-}
[ -n "$hardware_model" ] || hardware_model=$(read_dt /proc/device-tree/model)
serial_number=${SWRM_SERIAL_NUMBER:-}
[ -n "$serial_number" ] || serial_number=$(read_dt /proc/device-tree/serial-number)
firmware_version=${SWRM_FIRMWARE_VERSION:-}

command -v curl >/dev/null 2>&1 ||
    die "curl is not installed (Debian / Raspberry Pi OS / Ubuntu: sudo apt-get install -y curl)"

have_python=0
if command -v python3 >/dev/null 2>&1 && python3 -c 'import json' >/dev/null 2>&1; then
    have_python=1
fi

# --- temporary files, removed on every exit ---------------------------------

umask 077
work_dir=$(mktemp -d 2>/dev/null || mktemp -d -t swrm-pair) ||
    die "cannot create a temporary directory"
key_tmp=""
cleanup() {
    rm -rf -- "$work_dir"
    if [ -n "$key_tmp" ]; then rm -f -- "$key_tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
resp_body=$work_dir/body
resp_headers=$work_dir/headers

# --- make sure the key can be stored BEFORE the one-time token is spent -----

[ ! -d "$token_file" ] || die "SWRM_TOKEN_FILE '$token_file' is a directory"
token_dir=$(dirname -- "$token_file")
if [ ! -d "$token_dir" ]; then
    { mkdir -p -- "$(dirname -- "$token_dir")" && mkdir -m 700 -- "$token_dir"; } 2>/dev/null ||
        die "cannot create directory '$token_dir' for the device key (run as root, e.g. with sudo -E, or set SWRM_TOKEN_FILE to a writable path)"
fi
key_tmp=$(mktemp "$token_dir/.swrm-token.XXXXXX" 2>/dev/null) || {
    key_tmp=""
    die "cannot write to '$token_dir', so the device key could not be stored in '$token_file' (run as root, e.g. with sudo -E, or set SWRM_TOKEN_FILE to a writable path)"
}

# --- request body ------------------------------------------------------------

# JSON string literal for $1 (bash fallback when python3 is missing).
json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    # Drop any other control character (not allowed raw in JSON strings).
    s=$(printf '%s' "$s" | tr -d '\000-\037\177')
    printf '"%s"' "$s"
}

if [ "$have_python" = 1 ]; then
    # Values are passed through the environment, never as arguments.
    body=$(
        _P_TOKEN=$prov_token _P_HW=$hardware_model _P_SN=$serial_number _P_FW=$firmware_version \
            python3 -c '
import json, os
body = {"provisioning_token": os.environ["_P_TOKEN"]}
for key, var in (("hardware_model", "_P_HW"), ("serial_number", "_P_SN"),
                 ("firmware_version", "_P_FW")):
    value = os.environ.get(var, "").strip()
    if value:
        body[key] = value
print(json.dumps(body))
'
    ) || die "python3 failed to encode the request body"
else
    body="{\"provisioning_token\":$(json_str "$prov_token")"
    [ -z "$hardware_model" ] || body+=",\"hardware_model\":$(json_str "$hardware_model")"
    [ -z "$serial_number" ] || body+=",\"serial_number\":$(json_str "$serial_number")"
    [ -z "$firmware_version" ] || body+=",\"firmware_version\":$(json_str "$firmware_version")"
    body+="}"
fi

# --- response parsing --------------------------------------------------------

# json_get FILE KEY [SUBKEY...]: print the string (or number) found at that
# path of the JSON document in FILE; print nothing when absent or unparsable.
json_get() {
    local file=$1
    shift
    if [ "$have_python" = 1 ]; then
        python3 -c '
import json, sys
try:
    with open(sys.argv[1], "rb") as f:
        v = json.load(f)
    for k in sys.argv[2:]:
        v = v[k]
except Exception:
    sys.exit(0)
if isinstance(v, bool) or v is None:
    sys.exit(0)
if isinstance(v, (str, int, float)):
    sys.stdout.write(" ".join(str(v).splitlines()))
' "$file" "$@" 2>/dev/null || true
    else
        # Flat fallback: the last key names a unique string field.
        local key
        for key in "$@"; do :; done
        tr -d '\r\n' <"$file" 2>/dev/null |
            sed -nE 's/.*"'"$key"'"[[:space:]]*:[[:space:]]*"(([^"\\]|\\.)*)".*/\1/p' |
            sed -e 's/\\"/"/g' -e 's/\\\\/\\/g' || true
    fi
}

# --- the request ---------------------------------------------------------------

url=$api/api/public/v1/pair
curl_rc=0
http_status=$(
    printf '%s' "$body" |
        curl --silent --show-error \
            --connect-timeout 15 --max-time 60 \
            --request POST \
            --header 'Content-Type: application/json' \
            --header 'Accept: application/json' \
            --header "User-Agent: swrm-pair.sh" \
            --data-binary @- \
            --dump-header "$resp_headers" \
            --output "$resp_body" \
            --write-out '%{http_code}' \
            "$url"
) || curl_rc=$?
unset body

if [ "$curl_rc" -ne 0 ]; then
    case $curl_rc in
        3) reason="the URL '$url' is malformed; check SWRM_API" ;;
        5 | 6) reason="cannot resolve the host in SWRM_API ('$api'); check the name and DNS" ;;
        7) reason="cannot connect to $api; is the server running and reachable from this device?" ;;
        28) reason="timed out talking to $api" ;;
        35 | 51 | 53 | 54 | 58 | 59 | 60 | 66 | 77 | 80 | 82 | 83 | 90 | 91)
            reason="TLS failure talking to $api (certificate or handshake problem; is the device clock correct?)" ;;
        52 | 56) reason="the connection to $api was closed without a complete answer" ;;
        *) reason="request to $url failed" ;;
    esac
    die "server unreachable: $reason (curl exit code $curl_rc)"
fi

if [ "$http_status" != 200 ]; then
    err_code=$(json_get "$resp_body" error code)
    err_msg=$(json_get "$resp_body" error message)
    detail=""
    [ -z "$err_code" ] || detail=" [$err_code]"
    [ -z "$err_msg" ] || detail="$detail: $err_msg"
    printf '%s: error: pairing failed: HTTP %s%s\n' "$prog" "$http_status" "$detail" >&2
    case $http_status in
        401)
            printf '%s\n' \
                "The provisioning token is unknown, already used or expired (tokens work once and expire, by default after 24 h)." \
                "Create a new one in the console (Devices) or with" \
                "POST /api/v1/devices/{id}/provisioning-token, then run this script again with the new SWRM_PROV_TOKEN." >&2
            ;;
        429)
            retry=$(tr -d '\r' <"$resp_headers" 2>/dev/null |
                sed -n 's/^[Rr][Ee][Tt][Rr][Yy]-[Aa][Ff][Tt][Ee][Rr]:[[:space:]]*//p' | tail -n 1 || true)
            printf 'Rate limited (pairing is limited per source IP); retry in %s seconds.\n' "${retry:-a few}" >&2
            ;;
        400 | 413 | 415)
            echo "The server rejected the request body; check SWRM_HARDWARE_MODEL, SWRM_SERIAL_NUMBER and SWRM_FIRMWARE_VERSION." >&2
            ;;
        301 | 302 | 303 | 307 | 308)
            location=$(tr -d '\r' <"$resp_headers" 2>/dev/null |
                sed -n 's/^[Ll][Oo][Cc][Aa][Tt][Ii][Oo][Nn]:[[:space:]]*//p' | tail -n 1 || true)
            printf 'The server redirected to %s; set SWRM_API to the final base URL (https?).\n' "${location:-another URL}" >&2
            ;;
        404 | 405)
            echo "No pairing endpoint at $url; is SWRM_API the base URL of a swrm server?" >&2
            ;;
        5??)
            echo "Server-side failure; try again later or check the server logs." >&2
            ;;
        *) ;;
    esac
    exit 1
fi

# --- success: store the key -----------------------------------------------------

api_key=$(json_get "$resp_body" api_key)
device_id=$(json_get "$resp_body" device_id)
name=$(json_get "$resp_body" name)

case $api_key in
    swrm_dk_*) ;;
    *) die "HTTP 200 but the answer carries no swrm_dk_ device key; the provisioning token may now be spent: create a new one and retry" ;;
esac
case $api_key in
    *[[:space:]]* | *[[:cntrl:]]*) die "HTTP 200 but the device key in the answer is malformed; create a new provisioning token and retry" ;;
    *) ;;
esac

# No trailing newline, so naive readers get exactly the key.
if ! printf '%s' "$api_key" >"$key_tmp" ||
    ! chmod 600 -- "$key_tmp" ||
    ! mv -f -- "$key_tmp" "$token_file"; then
    die "paired as device ${name:-?} (${device_id:-?}) but could not write the key to '$token_file'; the provisioning token is spent: create a new one and pair again"
fi
key_tmp=""
chmod 600 -- "$token_file" || die "could not set mode 600 on '$token_file'"
unset api_key

printf 'paired as device %s (%s); key written to %s\n' "${name:-?}" "${device_id:-?}" "$token_file"
