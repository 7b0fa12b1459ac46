"""``make prices``: refresh ``smtrain/core/prices.json`` from AWS's Price List.

It asks the Price List Query API (``pricing:GetProducts``, ServiceCode ``AmazonSageMaker``, in
the endpoint region us-east-1) for the regions given, and keeps each ``ml.*`` training instance
type's on-demand price per hour in USD. Each ``PriceList`` entry is a JSON document with
``product.attributes`` and ``terms.OnDemand.<offer>.priceDimensions.<rate>`` holding ``unit`` and
``pricePerUnit.USD`` (AWS Billing user guide, "Using the AWS Price List Query API").

Which attribute marks a *training* price is not in AWS's documents for SageMaker: this reads an
entry as a training instance price when its ``component`` is ``Training``, its ``instanceType``
ends in ``-Training`` or its ``usagetype`` holds ``Train:``, and takes the instance type from
``instanceName`` or ``instanceType`` (less that suffix); an entry that gives two different prices
for one type is refused rather than guessed at. Needs AWS credentials (the API has no anonymous
access).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from smtrain.core import prices

SERVICE_CODE = "AmazonSageMaker"
#: The Price List Query API's endpoints are in us-east-1 (and two other regions).
ENDPOINT_REGION = "us-east-1"
_INSTANCE = re.compile(r"ml\.[a-z0-9-]+\.[a-z0-9]+")


def training_prices(price_list: Iterable[str]) -> dict[str, float]:
    """The on-demand USD/hour of each training instance type in ``price_list`` (GetProducts'
    entries, JSON text)."""
    found: dict[str, float] = {}
    for text in price_list:
        entry = json.loads(text)
        attributes = entry.get("product", {}).get("attributes", {})
        raw_type = str(attributes.get("instanceName") or attributes.get("instanceType") or "")
        training = (attributes.get("component") == "Training" or raw_type.endswith("-Training")
                    or "Train:" in str(attributes.get("usagetype", "")))
        instance_type = raw_type.removesuffix("-Training")
        if not training or not _INSTANCE.fullmatch(instance_type):
            continue
        for offer in entry.get("terms", {}).get("OnDemand", {}).values():
            for dimension in offer.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if dimension.get("unit") != "Hrs" or usd is None:
                    continue
                price = float(usd)
                if price <= 0:
                    continue
                if instance_type in found and found[instance_type] != price:
                    raise ValueError(f"two on-demand prices for {instance_type}: {found[instance_type]} "
                                     f"and {price}; the price list is not read as expected")
                found[instance_type] = price
    return found


def fetch(pricing: Any, region: str) -> dict[str, float]:
    """Every training price of ``region`` (all pages)."""
    kwargs: dict[str, Any] = {"ServiceCode": SERVICE_CODE, "FormatVersion": "aws_v1",
                              "Filters": [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}]}
    entries: list[str] = []
    while True:
        page = pricing.get_products(**kwargs)
        entries += page.get("PriceList", [])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    return training_prices(entries)


def refresh(pricing: Any, regions: Sequence[str], table_path: Path = prices.TABLE,
            now: datetime.datetime | None = None) -> dict[str, Any]:
    """Fetch ``regions`` and write them into the table (other regions kept); returns it."""
    table: dict[str, Any] = json.loads(table_path.read_text())
    for region in regions:
        found = fetch(pricing, region)
        if not found:
            raise ValueError(f"the price list gave no training price for {region}")
        table.setdefault("regions", {})[region] = dict(sorted(found.items()))
    table["fetched"] = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d")
    table["note"] = "Fetched by `make prices`; on-demand USD per instance-hour."
    table_path.write_text(json.dumps(table, indent=2) + "\n")
    prices.load.cache_clear()
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make prices", description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", action="append", required=True, help="a region to fetch (repeatable)")
    args = parser.parse_args(argv)
    import boto3

    table = refresh(boto3.client("pricing", region_name=ENDPOINT_REGION), args.region)
    for region in args.region:
        print(f"{region}: {len(table['regions'][region])} training instance types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
