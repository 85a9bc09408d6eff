// Measures the Ayla DSS docs' JavaScript client on Node.js with the npm
// package `ws`: N datapoint events from `ayla-sim --flood N` over loopback,
// handled by exactly the docs' onmessage logic (heartbeat test by substring,
// split on '|', JSON.parse). Prints one result line:
//   bench=node events=N seconds=S evps=R total_seconds=T rss_mb=M last_seq=Q
// seconds runs from the first event to the Nth; total_seconds also counts
// connecting. rss_mb is process.resourceUsage().maxRSS (peak RSS).
//
// usage: node bench/node/client.js URL KEY [N]
'use strict'
const WebSocket = require('ws')

const [url, key, nArg] = process.argv.slice(2)
const n = Number(nArg || 200000)
if (!url || !key || !(n > 0)) {
  console.error('usage: node bench/node/client.js URL KEY [N]')
  process.exit(2)
}

const now = () => Number(process.hrtime.bigint()) / 1e9
const tStart = now()
let count = 0
let lastSeq = null
let tFirst = null

function finish (code) {
  const tEnd = now()
  const seconds = tFirst === null ? 0 : tEnd - tFirst
  const evps = seconds > 0 ? (count - 1) / seconds : 0
  const rssMb = process.resourceUsage().maxRSS / 1024
  console.log(`bench=node events=${count} seconds=${seconds.toFixed(4)} evps=${evps.toFixed(0)} ` +
    `total_seconds=${(tEnd - tStart).toFixed(4)} rss_mb=${rssMb.toFixed(1)} last_seq=${lastSeq}`)
  process.exit(code)
}

// The docs' process(event), left to the application: count the events, keep the
// last seq. Named process_ because `process` is Node.js's global object.
function process_ (event) {
  if (tFirst === null) tFirst = now()
  count++
  lastSeq = event.seq
  if (count === n) finish(Number(lastSeq) === n ? 0 : 1)
}

// From here on, the docs' client (seed 000_614236a03537013e.txt, "WebSockets").
const socket = new WebSocket(url + '?stream_key=' + key)
socket.onopen = function (msg) {}
socket.onerror = function (msg) {
  console.error('client.js: ' + msg.message)
  finish(1)
}
socket.onmessage = function (msg) {
  if (msg.data.includes('|Z')) {
    socket.send('Z')
  } else {
    const arr = msg.data.split('|')
    const event = JSON.parse(arr[1])
    process_(event)
  }
}
socket.onclose = function (msg) {
  console.error(`client.js: closed after ${count} events`)
  finish(1)
}
setTimeout(() => {
  console.error(`client.js: timed out after ${count} events`)
  finish(1)
}, 60000).unref()
