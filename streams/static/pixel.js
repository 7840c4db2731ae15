/* shoprank pixel: batches shopper events to POST /v1/events. No dependencies.
 * <script src="https://COLLECTOR/v1/pixel.js" data-key="sr_pk_..." data-tenant="shop" async></script>
 * shoprank.consent(true) first: until then nothing is sent and nothing is stored.
 * Search with shoprank.ids() (user_id, session_id) in the request, so its log meets the events.
 * Results page: shoprank.results(searchId, productIds); shoprank.click(searchId, productId, position).
 * Product and cart pages: shoprank.addToCart(productId, price, currency, quantity).
 * Checkout: shoprank.purchase([{product_id, price, quantity}], currency).
 * The search_id of a click is remembered per product, so a later cart or purchase names its search. */
(function (w, d) {
  var me = d.currentScript || {}, ds = me.dataset || {};
  var cfg = {key: ds.key, tenant: ds.tenant, endpoint: me.src ? new URL("/v1/events", me.src).href : "/v1/events",
    batch: 20, wait: 1000, window: 1800000};
  var LS = w.localStorage, q = [], timer = 0, fails = 0, busy = false;
  function get(k) { try { return LS.getItem("sr_" + k); } catch (e) { return null; } }
  function put(k, v) { try { v == null ? LS.removeItem("sr_" + k) : LS.setItem("sr_" + k, v); } catch (e) {} }
  function consented() { return get("consent") === "1"; }
  function rid() {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 12);
  }
  function ids() {
    var now = Date.now(), uid = get("uid"), s = (get("sess") || "").split(".");
    if (!uid) put("uid", uid = rid());
    // a session ends after 30 idle minutes, like the attribution window on the server
    if (!s[0] || now - (+s[1] || 0) > cfg.window) s = [rid()];
    put("sess", s[0] + "." + now);
    return {user_id: uid, session_id: s[0]};
  }
  function memo() { try { return JSON.parse(get("attr") || "{}"); } catch (e) { return {}; } }
  function track(type, props) {
    if (!consented() || !cfg.key || !cfg.tenant) return false;
    var ev = ids(), k;
    ev.event_id = rid(); ev.tenant = cfg.tenant; ev.type = type; ev.client_ts = Date.now();
    ev.page_url = String(location.href).slice(0, 2048);
    for (k in props) if (props[k] != null) ev[k] = props[k];
    q.push(ev);
    if (q.length >= cfg.batch) flush(); else if (!timer) timer = setTimeout(flush, cfg.wait);
    return true;
  }
  function body(evs) { return JSON.stringify({key: cfg.key, events: evs}); }
  function retry() {
    // back-off 1, 2, 4 … 30 s with jitter, for network errors, 429 and 5xx
    var delay = Math.min(30000, 1000 * Math.pow(2, fails++)) * (0.5 + Math.random() / 2);
    clearTimeout(timer); timer = setTimeout(flush, delay);
  }
  function flush() {
    clearTimeout(timer); timer = 0;
    if (busy || !q.length) return;
    var evs = q.splice(0, cfg.batch); busy = true;
    // text/plain keeps it a CORS "simple" request: no preflight, and the same body sendBeacon sends
    fetch(cfg.endpoint, {method: "POST", body: body(evs), keepalive: true, headers: {"Content-Type": "text/plain"}})
      .then(function (r) {
        busy = false;
        if (r.status === 429 || r.status >= 500) { q = evs.concat(q); return retry(); }
        if (!r.ok) r.text().then(function (t) { console.warn("shoprank: events refused", r.status, t); });
        fails = 0; if (q.length) flush();
      }, function () { busy = false; q = evs.concat(q); retry(); });
  }
  function leave() {
    // the page is going away: hand what is queued to the browser, or keep it for the next page
    if (!q.length || !consented()) return;
    var evs = q; q = [];
    if (!(navigator.sendBeacon && navigator.sendBeacon(cfg.endpoint, body(evs)))) put("q", JSON.stringify(evs));
  }
  function restore() {
    var saved = get("q"); put("q", null);
    if (saved && consented()) { try { q = JSON.parse(saved).concat(q); } catch (e) {} flush(); }
  }
  function from(pid) {
    var m = memo()[pid];
    return m && Date.now() - m.t < cfg.window ? m : {};
  }
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") leave(); });
  w.addEventListener("pagehide", leave);
  w.shoprank = {
    init: function (o) { for (var k in o) cfg[k] = o[k]; restore(); },
    consent: function (yes) {
      if (yes) { put("consent", "1"); restore(); return; }
      q = []; ["consent", "uid", "sess", "attr", "q"].forEach(function (k) { put(k, null); });
    },
    // ids for search requests, so the search and the events it leads to share a session
    ids: function () { return consented() ? ids() : {}; },
    results: function (sid, items) { return track("impression", {search_id: sid, items: items}); },
    click: function (sid, pid, pos) {
      if (!consented()) return false;
      var m = memo(); m[pid] = {s: sid, p: pos, t: Date.now()}; put("attr", JSON.stringify(m));
      return track("click", {search_id: sid, product_id: pid, position: pos});
    },
    addToCart: function (pid, price, cur, n) {
      var m = from(pid); n = n || 1;
      return track("add_to_cart", {search_id: m.s, position: m.p, product_id: pid, quantity: n, price: price,
        value: price == null ? null : price * n, currency: price == null ? null : cur});
    },
    purchase: function (lines, cur) {
      return lines.map(function (l) {
        var m = from(l.product_id), n = l.quantity || 1;
        return track("purchase", {search_id: m.s, position: m.p, product_id: l.product_id, quantity: n,
          price: l.price, value: l.price * n, currency: cur});
      });
    },
    flush: flush
  };
  restore();
})(window, document);
