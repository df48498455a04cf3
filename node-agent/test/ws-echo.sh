# One connection on stdin/stdout: GET /ok answers "ok"; a WebSocket handshake is accepted, the
# server sends "hello <path>", echoes one text message (under 126 bytes) as "echo <text>", and
# closes with 1000, then reads until the client hangs up. Busybox only (sh, tr, sha1sum, xxd, base64, dd, od).
IFS= read -r req
req=$(printf %s "$req" | tr -d '\r')
key=""
while IFS= read -r line; do
  line=$(printf %s "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=${line#*: } ;; esac
done
path=${req#GET }
path=${path%% *}
if [ -z "$key" ]; then
  [ "$path" = /ok ] && { printf 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n'; exit 0; }
  printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
  exit 0
fi
accept=$(printf %s "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -d' ' -f1 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
text() { printf '\201'; printf "\\$(printf %03o ${#1})"; printf %s "$1"; }
text "hello $path"
set -- $(dd bs=1 count=6 2>/dev/null | od -An -tu1)
len=$(($2 & 127))
m0=$3 m1=$4 m2=$5 m3=$6
i=0
msg=""
for b in $(dd bs=1 count=$len 2>/dev/null | od -An -tu1); do
  eval "k=\$m$((i % 4))"
  msg="$msg$(printf "\\$(printf %03o $((b ^ k)))")"
  i=$((i + 1))
done
text "echo $msg"
printf '\210\002\003\350'
# Read what the client still sends (its close) until it hangs up: closing with unread input would
# reset the connection and drop what was just sent.
cat >/dev/null
