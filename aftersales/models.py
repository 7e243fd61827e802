"""Imports every model so that metadata (and Alembic) sees all tables."""

from aftersales.auth.models import ApiToken, IdempotencyRecord, LoginAttempt, User, WebSession
from aftersales.feedback.models import Digest, FeedbackAction, FeedbackItem, FeedbackRecord, ReasonCategory, RoutingRule
from aftersales.notifications.models import DeliveryAttempt, Notification, OutboxMessage, WebhookEndpoint
from aftersales.sla.models import SlaEvent, SlaPolicy
from aftersales.orders.models import Customer, LiveSession, Order, OrderItem, Shipment, TrackingEvent
from aftersales.tickets.models import (
    PolicyVersion,
    Queue,
    QueueMember,
    Ticket,
    TicketDecision,
    TicketItem,
    TicketNumberCounter,
    TimelineEvent,
)

__all__ = [
    "ApiToken",
    "Customer",
    "IdempotencyRecord",
    "LiveSession",
    "Order",
    "OrderItem",
    "Shipment",
    "Ticket",
    "TicketItem",
    "TicketNumberCounter",
    "TimelineEvent",
    "TrackingEvent",
    "User",
    "WebSession",
    "LoginAttempt",
    "PolicyVersion",
    "Queue",
    "QueueMember",
    "TicketDecision",
    "DeliveryAttempt",
    "Notification",
    "OutboxMessage",
    "WebhookEndpoint",
    "SlaEvent",
    "SlaPolicy",
    "Digest",
    "FeedbackAction",
    "FeedbackItem",
    "FeedbackRecord",
    "ReasonCategory",
    "RoutingRule",
]
