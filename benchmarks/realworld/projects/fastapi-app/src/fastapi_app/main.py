from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="inventory")


class Item(BaseModel):
    id: int
    name: str
    stock: int


ITEMS = {1: Item(id=1, name="bolt", stock=120), 2: Item(id=2, name="nut", stock=80)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> Item:
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return ITEMS[item_id]
