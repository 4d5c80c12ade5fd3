// The real Connect TypeScript client (@connectrpc/connect-node over protobuf-es code that buf
// generates into gen/) calling the orders release binary over Connect JSON, Connect proto and
// gRPC-Web. Run by crates/stack/tests/typescript.rs, which starts the stack and sets:
//   ORDERS_URL      orders' address, http://127.0.0.1:PORT
//   ORDERS_TOKEN    a bearer token for audience `orders`
//   CUSTOMER_EMAIL  a user that exists in users (orders checks the customer there)
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { describe, test } from "node:test";

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";

import { OrderEventKind, OrderService, OrderStatus } from "./gen/orders/v1/orders_pb.js";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this through crates/stack/tests/typescript.rs`);
  }
  return value;
}

const baseUrl = required("ORDERS_URL");
const token = required("ORDERS_TOKEN");
const customer = required("CUSTOMER_EMAIL");

/** Sends the bearer token with every call. */
const interceptors = [
  (next) => async (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return await next(request);
  },
];

// Every HTTP/1.1 request node sends, as "METHOD /path?query": how the test sees that
// GetOrder went out as a GET (the interceptors above run before that choice is made).
const sent = [];
diagnostics.subscribe("http.client.request.start", ({ request }) => sent.push(`${request.method} ${request.path}`));

// Every call carries a deadline, sent as connect-timeout-ms or grpc-timeout.
const defaultTimeoutMs = 10_000;

const protocols = [
  {
    name: "Connect JSON over HTTP/1.1, GetOrder as a cacheable GET",
    transport: () =>
      createConnectTransport({
        baseUrl,
        httpVersion: "1.1",
        useBinaryFormat: false,
        useHttpGet: true,
        defaultTimeoutMs,
        interceptors,
      }),
    // The HTTP/1.1 request GetOrder goes out as.
    getOrderSent: /^GET \/orders\.v1\.OrderService\/GetOrder\?connect=v1&encoding=json&message=/,
  },
  {
    name: "Connect proto over HTTP/2",
    transport: () =>
      createConnectTransport({
        baseUrl,
        httpVersion: "2",
        useBinaryFormat: true,
        defaultTimeoutMs,
        interceptors,
      }),
    getOrderSent: undefined, // HTTP/2: not seen by the http diagnostics channel
  },
  {
    name: "gRPC-Web over HTTP/1.1",
    transport: () =>
      createGrpcWebTransport({
        baseUrl,
        httpVersion: "1.1",
        useBinaryFormat: true,
        defaultTimeoutMs,
        interceptors,
      }),
    getOrderSent: /^POST \/orders\.v1\.OrderService\/GetOrder$/,
  },
];

for (const [index, protocol] of protocols.entries()) {
  describe(protocol.name, () => {
    const client = createClient(OrderService, protocol.transport());
    const totalCents = 1250n + BigInt(index);
    let created;

    test("CreateOrder returns the new order with the values sent", async () => {
      const before = Date.now();
      const { order } = await client.createOrder({
        customerEmail: customer,
        totalCents,
        currency: "EUR",
        idempotencyKey: `typescript-${index}-${process.pid}`,
      });
      assert.ok(order, "the response has an order");
      assert.match(order.id, /\S/);
      assert.equal(order.customerEmail, customer);
      assert.equal(order.totalCents, totalCents);
      assert.equal(order.currency, "EUR");
      assert.equal(order.status, OrderStatus.CREATED);
      const createdAt = timestampDate(order.createdAt).getTime();
      assert.ok(Math.abs(createdAt - before) < 60_000, `created_at ${order.createdAt} is about now`);
      created = order;
    });

    test("GetOrder returns the same order", async () => {
      const { order } = await client.getOrder({ id: created.id });
      assert.equal(order.id, created.id);
      assert.equal(order.customerEmail, customer);
      assert.equal(order.totalCents, totalCents);
      assert.equal(order.status, OrderStatus.CREATED);
      if (protocol.getOrderSent) {
        const getOrders = sent.filter((request) => request.includes("/GetOrder"));
        assert.ok(getOrders.some((request) => protocol.getOrderSent.test(request)), `GetOrder sent as ${getOrders}`);
      }
    });

    test("GetOrder of an unknown id is NotFound", async () => {
      await assert.rejects(client.getOrder({ id: "00000000-0000-0000-0000-000000000000" }), (error) => {
        assert.ok(error instanceof ConnectError, `${error}`);
        assert.equal(error.code, Code.NotFound, `${error}`);
        return true;
      });
    });

    test("ListOrders streams the customer's orders, the new one among them", async () => {
      const listed = [];
      for await (const message of client.listOrders({ customerEmail: customer, pageSize: 100 })) {
        listed.push(message.order);
      }
      assert.ok(listed.length >= 1, "at least the new order");
      assert.ok(listed.every((order) => order.customerEmail === customer), "only the customer's orders");
      const found = listed.find((order) => order.id === created.id);
      assert.ok(found, `order ${created.id} is listed among ${listed.map((order) => order.id)}`);
      assert.equal(found.totalCents, totalCents);
    });

    test("WatchOrder streams the created event, then the shipping and delivery the test causes", async () => {
      const events = client.watchOrder({ orderId: created.id })[Symbol.asyncIterator]();
      const next = async () => {
        const { value, done } = await events.next();
        assert.ok(!done, "the stream is still open");
        assert.equal(value.event.orderId, created.id);
        return value.event.kind;
      };
      // The created event arrives once the watch is set up, so the changes below are seen.
      assert.equal(await next(), OrderEventKind.CREATED);
      const shipped = await client.shipOrder({ id: created.id });
      assert.equal(shipped.order.status, OrderStatus.SHIPPED);
      assert.equal(await next(), OrderEventKind.SHIPPED);
      const delivered = await client.deliverOrder({ id: created.id });
      assert.equal(delivered.order.status, OrderStatus.DELIVERED);
      assert.equal(await next(), OrderEventKind.DELIVERED);
      assert.equal((await events.next()).done, true, "a delivered order's watch ends");
    });
  });
}

test("a call without a token is Unauthenticated", async () => {
  const anonymous = createClient(OrderService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  await assert.rejects(anonymous.getOrder({ id: "00000000-0000-0000-0000-000000000000" }), (error) => {
    assert.ok(error instanceof ConnectError, `${error}`);
    assert.equal(error.code, Code.Unauthenticated, `${error}`);
    return true;
  });
});
